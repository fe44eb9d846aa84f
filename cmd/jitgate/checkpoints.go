package main

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/audit"
	"github.com/jitgate/jitgate/config"
)

// checkpoints is the server's audit checkpointing: the signer and where verification finds
// the checkpoints again.
type checkpoints struct {
	signer *audit.Checkpointer
	source audit.CheckpointSource // nil with webhook witnesses only
	// keyFile and witnessFile are shown by the dev tour.
	keyFile, witnessFile string
}

// loadSigningKey reads the audit signing key the config names.
func loadSigningKey(a *config.Audit) (ed25519.PrivateKey, error) {
	var (
		data []byte
		err  error
		from string
	)
	switch {
	case a.SigningKeyFile != "":
		from = a.SigningKeyFile
		data, err = os.ReadFile(a.SigningKeyFile)
	case a.SigningKeyEnv != "":
		from = "$" + a.SigningKeyEnv
		v, ok := os.LookupEnv(a.SigningKeyEnv)
		if !ok {
			return nil, fmt.Errorf("audit.signing_key_env: environment variable %s is not set", a.SigningKeyEnv)
		}
		data = []byte(v)
	default:
		return nil, errors.New("audit: no signing key configured")
	}
	if err != nil {
		return nil, fmt.Errorf("audit.signing_key_file: %w", err)
	}
	key, err := audit.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("audit signing key %s: %w", from, err)
	}
	return key, nil
}

// serverCheckpoints sets up checkpointing from the config. With none configured, --dev makes
// a key and a witness file beside its temporary store; otherwise the server runs without and
// says what that leaves open.
func serverCheckpoints(cfg *config.Config, dev bool, devDir string, log *slog.Logger) (*checkpoints, error) {
	a := cfg.Audit
	if !a.Enabled() && dev && devDir != "" {
		priv, pub, err := audit.GenerateKey()
		if err != nil {
			return nil, err
		}
		a.SigningKeyFile = filepath.Join(devDir, "audit-signing.key")
		a.WitnessFile = filepath.Join(devDir, "audit-checkpoints.jsonl")
		if err := os.WriteFile(a.SigningKeyFile, priv, 0o600); err != nil {
			return nil, err
		}
		if err := os.WriteFile(a.SigningKeyFile+".pub", pub, 0o644); err != nil {
			return nil, err
		}
		if a.CheckpointIntervalValue == 0 {
			a.CheckpointIntervalValue = config.DefaultCheckpointInterval
		}
	}
	if !a.Enabled() {
		log.Warn("audit checkpoints are off: someone with write access to the store could cut or rewrite the end of the audit log unnoticed; set audit.signing_key_file and audit.witness_file (jitgate audit keygen makes a key)")
		return &checkpoints{}, nil
	}
	key, err := loadSigningKey(&a)
	if err != nil {
		return nil, err
	}
	cp := &checkpoints{signer: &audit.Checkpointer{Key: key, Interval: a.CheckpointIntervalValue, Logger: log}, keyFile: a.SigningKeyFile}
	if a.WitnessFile != "" {
		cp.signer.Witnesses = append(cp.signer.Witnesses, &audit.FileWitness{Path: a.WitnessFile})
		cp.source = &audit.FileCheckpoints{Path: a.WitnessFile, Key: key.Public().(ed25519.PublicKey)}
		cp.witnessFile = a.WitnessFile
	}
	for i, w := range a.WitnessWebhooks {
		secret, err := config.LoadPassword(jitgate.Secret{User: fmt.Sprintf("audit.witness_webhooks.%d secret", i), PasswordEnv: w.SecretEnv, PasswordFile: w.SecretFile})
		if err != nil {
			return nil, err
		}
		cp.signer.Witnesses = append(cp.signer.Witnesses, &audit.WebhookWitness{URL: w.URL, Secret: []byte(secret)})
	}
	var names []string
	for _, w := range cp.signer.Witnesses {
		names = append(names, w.Name())
	}
	log.Info("audit checkpoints on", "key", audit.KeyID(key.Public().(ed25519.PublicKey)), "every", a.CheckpointIntervalValue.String(),
		"witnesses", strings.Join(names, ", "))
	return cp, nil
}
