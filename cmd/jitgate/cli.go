package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/jitgate/jitgate"
	"github.com/jitgate/jitgate/internal/textsafe"
	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks a mistake in how the command was called (exit code 2).
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// app holds what every command shares.
type app struct {
	stdin io.Reader
	// stdout and stderr escape terminal controls in everything written to them (see
	// textsafe): text users typed is shown, never acted on.
	stdout, stderr io.Writer
	// rawStdout and rawStderr are the terminal itself, for what jitgate's own code draws (the
	// --wait spinner) and for a database client that connect hands the terminal to.
	rawStdout, rawStderr io.Writer
	output               string // "table" or "json"
}

// run executes the CLI with args and returns the exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	safeOut, safeErr := textsafe.NewWriter(stdout), textsafe.NewWriter(stderr)
	defer safeOut.Flush()
	defer safeErr.Flush()
	stdout, stderr = safeOut, safeErr
	a := &app{stdin: stdin, stdout: safeOut, stderr: safeErr, rawStdout: safeOut.Unwrap(), rawStderr: safeErr.Unwrap()}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "unknown flag") ||
		strings.Contains(err.Error(), "arg(s)") || strings.HasPrefix(err.Error(), "required flag") {
		fmt.Fprintf(stderr, "jitgate: %v\nRun 'jitgate --help' for usage.\n", err)
		return exitUsage
	}
	var silent silentError
	if !errors.As(err, &silent) {
		fmt.Fprintf(stderr, "jitgate: %s\n", message(err))
	}
	return exitFailure
}

// silentError is a failure the command already reported (e.g. a denied --wait).
type silentError struct{ error }

// message is what the user sees for err: the API's message for jitgate errors.
func message(err error) string {
	var je *jitgate.Error
	if errors.As(err, &je) {
		return je.Message
	}
	return err.Error()
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "jitgate",
		Short: "Just-in-time access: request narrow roles for a bounded time, approved by the right people",
		Long: `jitgate is a just-in-time access gateway. Nobody holds standing access: you request one role on
one resource for a bounded time with a reason, the approvers a policy names approve or deny,
and the access is switched on only while the grant lasts.

"jitgate server" runs the server. Every other command talks to a server: sign in with
"jitgate login --server URL --token TOKEN", or set JITGATE_SERVER and JITGATE_TOKEN.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVarP(&a.output, "output", "o", "table", "output format: table or json")
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		if cmd.Name() == "credentials" && (a.output == "env" || a.output == "uri") {
			return nil
		}
		if a.output != "table" && a.output != "json" {
			return usagef("--output must be table or json, not %q", a.output)
		}
		return nil
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(a.serverCmd(), a.tokenCmd(), a.loginCmd(), a.whoamiCmd(), a.resourcesCmd(), a.requestCmd(),
		a.requestsCmd(), a.showCmd(), a.approveCmd(), a.denyCmd(), a.cancelCmd(), a.grantsCmd(), a.revokeCmd(),
		a.extendCmd(), a.auditCmd(), a.policyCmd(), a.credentialsCmd(), a.connectCmd(), a.kubeconfigCmd(), a.kubeCredentialCmd(), a.sessionsCmd(), a.reportCmd(), a.mcpCmd(), a.readyCmd())
	return root
}

// exactArgs is cobra.ExactArgs with a message that names the arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usagef("%s takes %d argument(s): %s", cmd.Name(), len(names), strings.Join(names, " "))
		}
		return nil
	}
}

// printJSON writes v as indented JSON.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
