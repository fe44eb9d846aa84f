package jitgate

import (
	"errors"
	"fmt"
)

// Error codes. Every error that crosses a package boundary carries one of these, so the HTTP
// API can map it to a status and the gateway to a SQLSTATE.
const (
	EINVALID      = "EINVALID"      // the input is malformed or breaks a rule
	ENOTFOUND     = "ENOTFOUND"     // the named thing does not exist (or the caller may not see it)
	ECONFLICT     = "ECONFLICT"     // the thing exists but is in the wrong state for this action
	EUNAUTHORIZED = "EUNAUTHORIZED" // the caller is not authenticated
	EFORBIDDEN    = "EFORBIDDEN"    // the caller is authenticated but not allowed
	EINTERNAL     = "EINTERNAL"     // a fault inside jitgate or its store
	EUNAVAILABLE  = "EUNAVAILABLE"  // a dependency (store, target) cannot be reached right now
)

// Error is jitgate's one error type: a machine-readable Code and a human-readable Message that
// is safe to show to the caller (it never holds secrets).
type Error struct {
	Code    string
	Message string
}

// Error implements the error interface.
func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL for any other
// non-nil error, and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the message of the first *Error in err's chain, or a generic message
// for any other error so that internal details (SQL, hostnames) do not leak to callers.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// ErrStale is wrapped by store errors when a row changed between read and write (a lost-update
// guard tripped, or a unique key raced). The operation can be retried from the start.
var ErrStale = &Error{Code: ECONFLICT, Message: "changed concurrently; try again"}
