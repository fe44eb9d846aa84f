package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/internal/signing"
)

// Slack posts to a Slack incoming webhook: one Block Kit message per notification, naming
// its recipients with Slack mentions where their Slack member IDs are known. Incoming
// webhooks cannot edit what they posted, so a decision is a follow-up message that quotes the
// request it decides.
type Slack struct {
	// URL is the incoming webhook's URL (a secret: it is never logged).
	URL string
	// Members maps jitgate user names to Slack member IDs (U0123...).
	Members map[string]string
	Client  *http.Client
}

// Name is "slack".
func (s *Slack) Name() string { return "slack" }

// Target is where the sink delivers (for its outbox id; never logged: the URL is a secret).
func (s *Slack) Target() string { return s.URL }

// requester names r's requester, with the owner who answers for an agent.
func (s *Slack) requester(r *jitgate.Request) string {
	if r.RequesterOwner == "" {
		return s.mention(r.Requester)
	}
	return fmt.Sprintf("%s (agent of %s)", s.mention(r.Requester), s.mention(r.RequesterOwner))
}

func (s *Slack) mention(user string) string {
	if id := s.Members[user]; id != "" {
		return "<@" + id + ">"
	}
	return "@" + user
}

// Send posts m.
func (s *Slack) Send(ctx context.Context, m *Message) error {
	body, err := json.Marshal(s.blocks(m))
	if err != nil {
		return err
	}
	c := s.Client
	if c == nil {
		c = http.DefaultClient
	}
	if err := signing.Post(ctx, c, s.URL, body, nil, "", time.Now()); err != nil {
		return fmt.Errorf("slack: %w", err)
	}
	return nil
}

// SlackMessage is the Block Kit payload Send posts.
type SlackMessage struct {
	Text   string       `json:"text"`
	Blocks []SlackBlock `json:"blocks"`
}

// SlackBlock is one Block Kit block (header, section, context or actions).
type SlackBlock struct {
	Type     string         `json:"type"`
	Text     *SlackText     `json:"text,omitempty"`
	Fields   []SlackText    `json:"fields,omitempty"`
	Elements []SlackElement `json:"elements,omitempty"`
}

// SlackText is a plain_text or mrkdwn text object.
type SlackText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// SlackElement is a context text or an actions button.
type SlackElement struct {
	Type  string `json:"type"`
	Text  any    `json:"text,omitempty"`
	URL   string `json:"url,omitempty"`
	Style string `json:"style,omitempty"`
}

func (s *Slack) blocks(m *Message) *SlackMessage {
	title := m.Title
	if m.Urgent {
		title = ":rotating_light: " + title
	}
	var who []string
	for _, r := range m.Recipients {
		who = append(who, s.mention(r))
	}
	// Title and Text hold text users typed (reasons, comments): in Slack's mrkdwn it must not
	// become a mention (<!channel>, <@U…>) or a link whose label hides its address.
	fallback := slackEscape(title)
	if len(who) > 0 {
		fallback = strings.Join(who, " ") + " " + fallback
	}
	msg := &SlackMessage{Text: fallback}
	msg.Blocks = append(msg.Blocks, SlackBlock{Type: "header", Text: &SlackText{Type: "plain_text", Text: truncate(title, 150)}})
	var fields []SlackText
	if r := m.Request; r != nil {
		fields = append(fields,
			SlackText{Type: "mrkdwn", Text: fmt.Sprintf("*Request*\n#%d (%s)", r.ID, strings.ReplaceAll(string(r.State), "_", " "))},
			SlackText{Type: "mrkdwn", Text: fmt.Sprintf("*Requester*\n%s", s.requester(r))},
			SlackText{Type: "mrkdwn", Text: fmt.Sprintf("*Access*\n%s/%s", r.Resource, r.Role)},
			SlackText{Type: "mrkdwn", Text: fmt.Sprintf("*Duration*\n%s", r.Duration)})
	} else if g := m.Grant; g != nil {
		fields = append(fields,
			SlackText{Type: "mrkdwn", Text: fmt.Sprintf("*Grant*\n#%d (%s)", g.ID, g.State)},
			SlackText{Type: "mrkdwn", Text: fmt.Sprintf("*Owner*\n%s", s.mention(g.User))},
			SlackText{Type: "mrkdwn", Text: fmt.Sprintf("*Access*\n%s/%s", g.Resource, g.Role)},
			SlackText{Type: "mrkdwn", Text: fmt.Sprintf("*Ends*\n<!date^%d^{date_short_pretty} {time}|%s>", g.EndsAt.Unix(), g.EndsAt.Format(time.RFC3339))})
	}
	if len(fields) > 0 {
		msg.Blocks = append(msg.Blocks, SlackBlock{Type: "section", Fields: fields})
	}
	if m.Text != "" {
		msg.Blocks = append(msg.Blocks, SlackBlock{Type: "section", Text: &SlackText{Type: "mrkdwn", Text: truncate(slackEscape(m.Text), 2900)}})
	}
	if len(who) > 0 {
		msg.Blocks = append(msg.Blocks, SlackBlock{Type: "context", Elements: []SlackElement{{Type: "mrkdwn", Text: "For " + strings.Join(who, " ")}}})
	}
	if m.URL != "" {
		label := "Open in jitgate"
		if m.Kind == KindRequestPending || m.Kind == KindBreakGlass {
			label = "Review"
		}
		btn := SlackElement{Type: "button", Text: SlackText{Type: "plain_text", Text: label}, URL: m.URL}
		if m.Urgent {
			btn.Style = "danger"
		}
		msg.Blocks = append(msg.Blocks, SlackBlock{Type: "actions", Elements: []SlackElement{btn}})
	}
	return msg
}

// slackEscape escapes the three characters Slack's markup is made of (&, <, >), so that text
// shows as typed; Slack's documentation asks for exactly these escapes.
var slackEscape = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// Webhook posts each message as JSON (the Message itself) to URL, signed like jitgate's other
// webhooks (see internal/signing: X-Jitgate-Timestamp and X-Jitgate-Signature), with the
// message ID as Idempotency-Key.
type Webhook struct {
	URL    string
	Secret []byte
	Client *http.Client
	// Now stamps the signature; defaults to time.Now.
	Now func() time.Time
}

// Name is "webhook:" and the receiver's host.
// Target is where the sink delivers (for its outbox id).
func (w *Webhook) Target() string { return w.URL }

func (w *Webhook) Name() string {
	if u, err := url.Parse(w.URL); err == nil {
		return "webhook:" + u.Host
	}
	return "webhook"
}

// Send posts m.
func (w *Webhook) Send(ctx context.Context, m *Message) error {
	body, err := json.Marshal(m)
	if err != nil {
		return err
	}
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	c := w.Client
	if c == nil {
		c = http.DefaultClient
	}
	if err := signing.Post(ctx, c, w.URL, body, w.Secret, m.ID, now()); err != nil {
		return fmt.Errorf("%s: %w", w.Name(), err)
	}
	return nil
}
