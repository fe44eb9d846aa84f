package audit

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/internal/signing"
)

// A hash chain catches an edit in the middle of the log, but not at its end: whoever can write
// to the store can delete the last events and move the head back, or rewrite the last event
// and recompute its hash and the head. Checkpoints close that gap. Every so often, and at
// shutdown, the server signs the chain's head with a key kept outside the store and hands the
// signed checkpoint to witnesses outside the store (an append-only file, a webhook). Verify
// with a checkpoint then also checks that the chain still holds the event the checkpoint
// names, with the hash it names: a cut or rewritten tail up to that event is caught.

// Problems reported by VerifyCheckpoint, beside Verify's.
const (
	// ProblemCut: the chain ends before the event a signed checkpoint covers.
	ProblemCut = "cut"
	// ProblemRewritten: an event a signed checkpoint covers has another hash now.
	ProblemRewritten = "rewritten"
)

// checkpointDomain starts every signed message, so that a checkpoint signature can never be
// taken for a signature of anything else.
const checkpointDomain = "jitgate-audit-checkpoint-v1"

// Checkpoint is a signed statement that the audit chain of an installation had event Seq, with
// hash Hash, as its head at Time.
type Checkpoint struct {
	Installation string    `json:"installation"`
	Seq          int64     `json:"seq"`
	Hash         string    `json:"hash"`
	Time         time.Time `json:"time"`
	// KeyID names the signing key: the first 16 hex digits of its public key's SHA-256.
	KeyID string `json:"key_id"`
	// Signature is the base64 Ed25519 signature of the checkpoint's message.
	Signature string `json:"signature"`
}

// message is what is signed: every field but the signature, unambiguously.
func (c *Checkpoint) message() []byte {
	return []byte(strings.Join([]string{checkpointDomain, c.Installation, strconv.FormatInt(c.Seq, 10), c.Hash,
		c.Time.UTC().Format(time.RFC3339Nano), c.KeyID}, "\n"))
}

// KeyID returns the id of a public key (see Checkpoint.KeyID).
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// Sign signs c with key, setting its KeyID and Signature.
func (c *Checkpoint) Sign(key ed25519.PrivateKey) {
	c.KeyID = KeyID(key.Public().(ed25519.PublicKey))
	c.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(key, c.message()))
}

// CheckSignature reports whether c is signed by pub.
func (c *Checkpoint) CheckSignature(pub ed25519.PublicKey) error {
	if c.KeyID != KeyID(pub) {
		return fmt.Errorf("checkpoint of event %d is signed with key %s, not %s", c.Seq, c.KeyID, KeyID(pub))
	}
	sig, err := base64.StdEncoding.DecodeString(c.Signature)
	if err != nil || !ed25519.Verify(pub, c.message(), sig) {
		return fmt.Errorf("checkpoint of event %d has an invalid signature: it was altered or forged", c.Seq)
	}
	return nil
}

// GenerateKey returns a new signing key as PEM (PKCS #8, as `openssl genpkey -algorithm
// ed25519` writes) and its public key as PEM (PKIX).
func GenerateKey() (private, public []byte, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), nil
}

// ParsePrivateKey reads an Ed25519 signing key in PEM (PKCS #8).
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM \"PRIVATE KEY\" (generate one with: jitgate audit keygen)")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not a PKCS #8 private key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("the key is %T; audit checkpoints need Ed25519", k)
	}
	return priv, nil
}

// ParsePublicKey reads an Ed25519 public key in PEM (PKIX), or a private key's public half.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("not a PEM public key")
	}
	if block.Type == "PRIVATE KEY" {
		priv, err := ParsePrivateKey(data)
		if err != nil {
			return nil, err
		}
		return priv.Public().(ed25519.PublicKey), nil
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not a PKIX public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("the key is %T; audit checkpoints need Ed25519", k)
	}
	return pub, nil
}

// VerifyCheckpoint is Verify, and then checks the chain against cp, whose signature must be
// pub's: the chain must still reach event cp.Seq, and that event's hash must be cp.Hash.
// Events appended after the checkpoint are fine. A checkpoint of another installation is an
// error, not a finding.
func VerifyCheckpoint(ctx context.Context, s jitgate.Store, cp *Checkpoint, pub ed25519.PublicKey) (*Result, error) {
	if err := cp.CheckSignature(pub); err != nil {
		return nil, jitgate.Errorf(jitgate.EINVALID, "%v", err)
	}
	var install string
	if err := s.View(ctx, func(tx jitgate.Tx) (err error) { install, err = tx.InstallationID(); return err }); err != nil {
		return nil, err
	}
	if cp.Installation != install {
		return nil, jitgate.Errorf(jitgate.EINVALID, "the checkpoint is of installation %s; this store is installation %s", cp.Installation, install)
	}
	res, err := Verify(ctx, s)
	if err != nil {
		return nil, err
	}
	res.Checkpoint = cp
	if !res.OK && res.Problem != ProblemTruncated {
		return res, nil
	}
	bad := func(seq int64, problem, format string, args ...any) (*Result, error) {
		res.OK, res.FirstBad, res.Problem, res.Message = false, seq, problem, fmt.Sprintf(format, args...)
		return res, nil
	}
	signed := fmt.Sprintf("signed at %s", jitgate.FormatTime(cp.Time))
	var ev []*jitgate.AuditEvent
	if err := s.View(ctx, func(tx jitgate.Tx) (err error) {
		ev, err = tx.ListAudit(jitgate.AuditFilter{AfterSeq: cp.Seq - 1, Limit: 1})
		return err
	}); err != nil {
		return nil, err
	}
	switch {
	case cp.Seq == 0:
	case len(ev) == 0 || ev[0].Seq != cp.Seq || res.HeadSeq < cp.Seq:
		last := min(res.HeadSeq, cp.Seq-1)
		return bad(last+1, ProblemCut, "the log was cut: a checkpoint %s covers events up to %d, but the chain now ends at event %d (events %d to %d were deleted and the head moved back)",
			signed, cp.Seq, res.HeadSeq, last+1, cp.Seq)
	case ev[0].Hash != cp.Hash:
		return bad(cp.Seq, ProblemRewritten, "the log's end was rewritten: event %d's hash is %s, but a checkpoint %s recorded %s (events up to %d were replaced and their hashes recomputed)",
			cp.Seq, short(ev[0].Hash), signed, short(cp.Hash), cp.Seq)
	}
	return res, nil
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// ReadCheckpoints returns the last well-formed checkpoint in r (JSON lines, as FileWitness
// writes them) that pub signed; lines that are not are skipped and counted in skipped (a
// torn last line after a crash, a line someone forged). nil if there is none.
func ReadCheckpoints(r io.Reader, pub ed25519.PublicKey) (last *Checkpoint, skipped int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var cp Checkpoint
		if json.Unmarshal([]byte(line), &cp) != nil || cp.CheckSignature(pub) != nil {
			skipped++
			continue
		}
		if last == nil || cp.Seq >= last.Seq {
			last = &cp
		}
	}
	return last, skipped, sc.Err()
}

// ReadCheckpointFile is ReadCheckpoints on a file.
func ReadCheckpointFile(path string, pub ed25519.PublicKey) (*Checkpoint, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	return ReadCheckpoints(f, pub)
}

// Witness keeps signed checkpoints outside the store. Implementations: FileWitness,
// WebhookWitness; any other (an object store with retention, a transparency log) fits.
type Witness interface {
	// Name identifies the witness in logs.
	Name() string
	// Witness records cp durably; an error means it should be retried.
	Witness(ctx context.Context, cp *Checkpoint) error
}

// FileWitness appends each checkpoint as a JSON line to a file, synced to disk. Keep the file
// where the store's users cannot write (another host, an append-only mount, chattr +a).
type FileWitness struct {
	Path string
	mu   sync.Mutex
}

// Name is "file:PATH".
func (w *FileWitness) Name() string { return "file:" + w.Path }

// Witness appends cp.
func (w *FileWitness) Witness(_ context.Context, cp *Checkpoint) error {
	line, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	f, err := os.OpenFile(w.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Checkpointer signs the chain's head every Interval (when it moved) and at Close, and hands
// each checkpoint to every witness.
type Checkpointer struct {
	Store     jitgate.Store
	Key       ed25519.PrivateKey
	Witnesses []Witness
	// Interval defaults to one minute: events newer than the last checkpoint are what a cut
	// or rewrite could still take unnoticed.
	Interval time.Duration
	Clock    jitgate.Clock
	Logger   *slog.Logger

	mu      sync.Mutex
	lastSeq int64
}

// Run checkpoints until ctx ends, then once more (the shutdown checkpoint).
func (c *Checkpointer) Run(ctx context.Context) {
	if c.Clock == nil {
		c.Clock = jitgate.SystemClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	every := c.Interval
	if every <= 0 {
		every = time.Minute
	}
	for {
		if _, err := c.Checkpoint(ctx); err != nil && ctx.Err() == nil {
			c.Logger.Error("audit checkpoint failed; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if _, err := c.Checkpoint(sctx); err != nil {
				c.Logger.Error("audit checkpoint at shutdown failed", "err", err)
			}
			cancel()
			return
		case <-c.Clock.After(every):
		}
	}
}

// Checkpoint signs the current head and gives it to every witness, unless the head has not
// moved since the last checkpoint every witness took. It returns the checkpoint (nil if
// there was nothing new).
func (c *Checkpointer) Checkpoint(ctx context.Context) (*Checkpoint, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cp := &Checkpoint{}
	err := c.Store.View(ctx, func(tx jitgate.Tx) error {
		var err error
		if cp.Installation, err = tx.InstallationID(); err != nil {
			return err
		}
		cp.Seq, cp.Hash, err = tx.AuditHead()
		return err
	})
	if err != nil {
		return nil, err
	}
	if cp.Seq == 0 || cp.Seq == c.lastSeq {
		return nil, nil
	}
	now := time.Now()
	if c.Clock != nil {
		now = c.Clock.Now()
	}
	cp.Time = now.UTC()
	cp.Sign(c.Key)
	var errs []error
	for _, w := range c.Witnesses {
		if err := w.Witness(ctx, cp); err != nil {
			errs = append(errs, fmt.Errorf("witness %s: %w", w.Name(), err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	c.lastSeq = cp.Seq
	return cp, nil
}

// WebhookWitness posts each checkpoint as JSON to URL (an append-only log service, a SIEM),
// signed with Secret like jitgate's other webhooks (X-Jitgate-Signature), with the checkpoint's
// installation and sequence number as its Idempotency-Key.
type WebhookWitness struct {
	URL    string
	Secret []byte
	Client *http.Client
}

// Name is "webhook:HOST" (the URL may hold a secret; its path is not logged).
func (w *WebhookWitness) Name() string {
	if u, err := url.Parse(w.URL); err == nil {
		return "webhook:" + u.Host
	}
	return "webhook"
}

// Witness posts cp.
func (w *WebhookWitness) Witness(ctx context.Context, cp *Checkpoint) error {
	body, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	c := w.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	return signing.Post(ctx, c, w.URL, body, w.Secret, fmt.Sprintf("%s:%d", cp.Installation, cp.Seq), time.Now())
}

// CheckpointSource finds the latest signed checkpoint, for verification.
type CheckpointSource interface {
	// Latest returns the latest checkpoint signed with the source's key (nil if none yet).
	Latest(ctx context.Context) (*Checkpoint, error)
	// PublicKey is the key checkpoints must be signed with.
	PublicKey() ed25519.PublicKey
}

// FileCheckpoints reads checkpoints from the file a FileWitness writes.
type FileCheckpoints struct {
	Path string
	Key  ed25519.PublicKey
}

// Latest returns the file's latest checkpoint signed with Key; none when the file does not
// exist yet (no checkpoint was written).
func (f *FileCheckpoints) Latest(context.Context) (*Checkpoint, error) {
	cp, _, err := ReadCheckpointFile(f.Path, f.Key)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return cp, err
}

// PublicKey returns Key.
func (f *FileCheckpoints) PublicKey() ed25519.PublicKey { return f.Key }

// VerifyLatest verifies the chain against src's latest checkpoint, or alone when there is none
// (src nil, or no checkpoint yet).
func VerifyLatest(ctx context.Context, s jitgate.Store, src CheckpointSource) (*Result, error) {
	if src == nil {
		return Verify(ctx, s)
	}
	cp, err := src.Latest(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading audit checkpoints: %w", err)
	}
	if cp == nil {
		return Verify(ctx, s)
	}
	return VerifyCheckpoint(ctx, s, cp, src.PublicKey())
}
