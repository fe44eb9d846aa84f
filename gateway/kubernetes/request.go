package kubernetes

import (
	"net/http"
	"net/url"
	"strings"
)

// maxText caps the audit text of one request.
const maxText = 4096

// requestInfo is what the gateway reads off a request: its audit text, and how to relay it.
type requestInfo struct {
	// text is the audit record's statement text: kubectl-like (verb, resource/subresource,
	// name, namespace, an exec's command), then the method and path as sent, e.g.
	// "list pods -n shop [GET /api/v1/namespaces/shop/pods?limit=500]".
	text  string
	watch bool
}

// describe reads a request the way the API server's request-info resolver does: verb,
// API group, resource, namespace, name and subresource.
func describe(r *http.Request) requestInfo {
	var info requestInfo
	q := r.URL.Query()
	info.watch = q.Get("watch") == "true" || q.Get("watch") == "1"
	raw := r.Method + " " + r.URL.RequestURI()
	parts := splitPath(r.URL.Path)
	var group string
	switch {
	case len(parts) >= 3 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 4 && parts[0] == "apis":
		group, parts = parts[1], parts[3:]
	default:
		info.text = clipText(strings.ToLower(r.Method) + " " + r.URL.Path + " [" + raw + "]")
		return info
	}
	namespace := ""
	// (namespaces/NAME alone is the namespace object itself.)
	if len(parts) >= 3 && parts[0] == "namespaces" {
		namespace, parts = parts[1], parts[2:]
	}
	resource, name, sub := parts[0], "", ""
	if len(parts) > 1 {
		name = parts[1]
	}
	if len(parts) > 2 {
		sub = strings.Join(parts[2:], "/")
	}
	verb := strings.ToLower(r.Method)
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		switch {
		case info.watch:
			verb = "watch"
		case name == "":
			verb = "list"
		default:
			verb = "get"
		}
	case http.MethodPost:
		verb = "create"
	case http.MethodPut:
		verb = "update"
	case http.MethodPatch:
		verb = "patch"
	case http.MethodDelete:
		verb = "delete"
		if name == "" {
			verb = "deletecollection"
		}
	}
	if group != "" {
		resource += "." + group
	}
	if sub != "" {
		resource += "/" + sub
	}
	var b strings.Builder
	b.WriteString(verb + " " + resource)
	if name != "" {
		b.WriteString(" " + name)
	}
	if namespace != "" {
		b.WriteString(" -n " + namespace)
	}
	if sub == "exec" || sub == "attach" {
		if c := q.Get("container"); c != "" {
			b.WriteString(" -c " + c)
		}
	}
	if cmd := q["command"]; sub == "exec" && len(cmd) > 0 {
		b.WriteString(" -- " + strings.Join(cmd, " "))
	}
	if sub == "portforward" {
		if ports := q["ports"]; len(ports) > 0 {
			b.WriteString(" " + strings.Join(ports, " "))
		}
	}
	b.WriteString(" [" + raw + "]")
	info.text = clipText(b.String())
	return info
}

// splitPath splits a path into its unescaped segments.
func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	parts := strings.Split(p, "/")
	for i, s := range parts {
		if u, err := url.PathUnescape(s); err == nil {
			parts[i] = u
		}
	}
	return parts
}

func clipText(s string) string {
	if len(s) <= maxText {
		return s
	}
	cut := maxText
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}
