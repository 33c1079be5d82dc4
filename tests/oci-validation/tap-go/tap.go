// Package tap is a minimal stand-in for github.com/mndrix/tap-go (the TAP producer the OCI
// runtime-tools validation programs import), which Debian does not package and which cannot be
// fetched here (no GitHub). It implements the API of upstream commit 629fa407e90b with the
// same output, JSON-flavoured YAML blocks included (upstream's default build).
package tap

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"testing/quick"
)

// T is a TAP producer.
type T struct {
	// shared with the copies Todo returns, so that they number on
	nextTestNumber *int
	// TODO marks the following tests with the TODO directive.
	TODO bool
	// Writer receives the TAP output; os.Stdout when nil.
	Writer io.Writer
}

// New returns a producer whose first test is number 1.
func New() *T {
	next := 1
	return &T{nextTestNumber: &next}
}

// Todo returns a producer that reports with the TODO directive and shares the numbering.
func (t *T) Todo() *T {
	todo := *t
	todo.TODO = true
	return &todo
}

func (t *T) w() io.Writer {
	if t.Writer == nil {
		return os.Stdout
	}
	return t.Writer
}

func (t *T) printf(format string, a ...interface{}) { fmt.Fprintf(t.w(), format, a...) }

// Header prints the version line and, for testCount > 0, the plan.
func (t *T) Header(testCount int) {
	t.printf("TAP version 13\n")
	if testCount > 0 {
		t.printf("1..%d\n", testCount)
	}
}

// Ok reports one test.
func (t *T) Ok(test bool, description string) {
	ok := "ok"
	if !test {
		ok = "not ok"
	}
	if t.TODO {
		t.printf("%s %d # TODO %s\n", ok, *t.nextTestNumber, description)
	} else {
		t.printf("%s %d - %s\n", ok, *t.nextTestNumber, description)
	}
	*t.nextTestNumber++
}

// Fail reports a failed test.
func (t *T) Fail(description string) { t.Ok(false, description) }

// Pass reports a passed test.
func (t *T) Pass(description string) { t.Ok(true, description) }

// Check runs a testing/quick property and reports it as one test.
func (t *T) Check(function interface{}, description string) {
	err := quick.Check(function, nil)
	if err == nil {
		t.Ok(true, description)
		return
	}
	t.Diagnostic(err.Error())
	t.Ok(false, description)
}

// Count is the number of tests reported so far.
func (t *T) Count() int { return *t.nextTestNumber - 1 }

// AutoPlan prints the plan for the tests reported so far.
func (t *T) AutoPlan() { t.printf("1..%d\n", t.Count()) }

func escapeNewlines(s string) string {
	return strings.Replace(strings.TrimRight(s, "\n"), "\n", "\n# ", -1)
}

// Diagnosticf prints a diagnostic line.
func (t *T) Diagnosticf(format string, a ...interface{}) {
	t.printf("# "+escapeNewlines(format)+"\n", a...)
}

// Diagnostic prints a diagnostic line.
func (t *T) Diagnostic(message string) { t.printf("# %s\n", escapeNewlines(message)) }

// Skip reports count skipped tests.
func (t *T) Skip(count int, description string) {
	for i := 0; i < count; i++ {
		t.printf("ok %d # SKIP %s\n", *t.nextTestNumber, description)
		*t.nextTestNumber++
	}
}

// YAML prints message as a YAML block (JSON, which is YAML) under the last test.
func (t *T) YAML(message interface{}) error {
	bytes, err := json.MarshalIndent(message, "  ", "  ")
	if err != nil {
		return err
	}
	t.printf("  ---\n  %s\n  ...\n", bytes)
	return nil
}
