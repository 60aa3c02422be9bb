// promql-check parses PromQL expressions with Prometheus's own parser (promql/parser) and
// reports each one that does not parse. Input: a JSON list of strings on stdin. Output: one
// JSON object per expression on stdout, {"expr": ..., "error": ""} ("" when it parses).
// Exit 1 when any expression failed; 2 on bad input.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/prometheus/prometheus/promql/parser"
)

type result struct {
	Expr  string `json:"expr"`
	Error string `json:"error"`
}

func main() {
	var exprs []string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fmt.Fprintf(os.Stderr, "promql-check: stdin is not a JSON list of strings: %v\n", err)
		os.Exit(2)
	}
	p := parser.NewParser(parser.Options{})
	failed := false
	out := json.NewEncoder(os.Stdout)
	for _, e := range exprs {
		r := result{Expr: e}
		if _, err := p.ParseExpr(e); err != nil {
			r.Error = err.Error()
			failed = true
		}
		if err := out.Encode(r); err != nil {
			os.Exit(2)
		}
	}
	if failed {
		os.Exit(1)
	}
}
