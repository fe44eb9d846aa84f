// Command jitgate is jitgate's single binary: `jitgate server` runs the server (API,
// scheduler); every other subcommand is a client of that server's API.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
