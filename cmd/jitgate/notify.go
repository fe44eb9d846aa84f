package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/access"
	"github.com/jitgate/jitgate/config"
	"github.com/jitgate/jitgate/notify"
	"github.com/prometheus/client_golang/prometheus"
)

// newNotifier builds the notifier the config asks for, or nil when it configures no sink.
// Secrets (the Slack URL, webhook keys) are read here, so a missing one fails the start.
func newNotifier(rt *runtime, log *slog.Logger, reg prometheus.Registerer) (*notify.Notifier, error) {
	nc := rt.cfg.Notifications
	client := &http.Client{Timeout: 10 * time.Second}
	var sinks []notify.Sink
	if s := nc.Slack; s != nil {
		u, err := config.LoadPassword(jitgate.Secret{User: "notifications.slack", PasswordEnv: s.WebhookURLEnv, PasswordFile: s.WebhookURLFile})
		if err != nil {
			return nil, err
		}
		if !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
			return nil, fmt.Errorf("notifications.slack: the webhook URL must start with https://")
		}
		members := map[string]string{}
		for _, usr := range rt.cfg.Users {
			if usr.Slack != "" {
				members[usr.Name] = usr.Slack
			}
		}
		sinks = append(sinks, &notify.Slack{URL: u, Members: members, Client: client})
	}
	for i, w := range nc.Webhooks {
		secret, err := config.LoadPassword(jitgate.Secret{User: fmt.Sprintf("notifications.webhooks.%d", i), PasswordEnv: w.SecretEnv, PasswordFile: w.SecretFile})
		if err != nil {
			return nil, err
		}
		if secret == "" {
			return nil, fmt.Errorf("notifications.webhooks.%d: the signing secret is empty", i)
		}
		sinks = append(sinks, &notify.Webhook{URL: w.URL, Secret: []byte(secret), Client: client})
	}
	if len(sinks) == 0 {
		return nil, nil
	}
	system := jitgate.NewSystemContext(context.Background())
	n := notify.New(notify.Options{
		Sinks: sinks, BaseURL: nc.BaseURL, ExpiryWarning: nc.ExpiryWarningValue, Logger: log, Registerer: reg, Outbox: rt.engine,
		Grants: func(ctx context.Context) ([]*jitgate.Grant, error) {
			return rt.engine.ListGrants(system, access.GrantQuery{Active: true, Limit: 10000})
		},
	})
	rt.engine.SetEffects(n.Effects)
	rt.engine.Subscribe(n.Handle)
	return n, nil
}
