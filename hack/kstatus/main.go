// Command kstatus computes the kstatus result of Kubernetes objects with both kstatus
// libraries users run: sigs.k8s.io/cli-utils (kubectl-style tools) and its fork
// github.com/fluxcd/cli-utils (linked by Flux and Helm 4's --wait).
//
// Usage: kstatus < objects.json > results.json
// stdin is a JSON array of objects; stdout a JSON array of {"sigs": {...}, "fluxcd": {...}},
// each {status, message, error}, in order.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	fluxstatus "github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	sigsstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

type results struct {
	Sigs   result `json:"sigs"`
	FluxCD result `json:"fluxcd"`
}

func main() {
	var raw []json.RawMessage
	if err := json.NewDecoder(os.Stdin).Decode(&raw); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: stdin:", err)
		os.Exit(1)
	}
	out := make([]results, 0, len(raw))
	for _, item := range raw {
		// Decoded as the API machinery does (integers stay int64), as clients see objects.
		object := &unstructured.Unstructured{}
		if err := object.UnmarshalJSON(item); err != nil {
			fmt.Fprintln(os.Stderr, "kstatus: object:", err)
			os.Exit(1)
		}
		var r results
		// Each library gets its own copy: Compute must not see the other's side effects.
		sigs, err := sigsstatus.Compute(object.DeepCopy())
		if err != nil {
			r.Sigs.Error = err.Error()
		} else {
			r.Sigs = result{Status: sigs.Status.String(), Message: sigs.Message}
		}
		flux, err := fluxstatus.Compute(object.DeepCopy())
		if err != nil {
			r.FluxCD.Error = err.Error()
		} else {
			r.FluxCD = result{Status: flux.Status.String(), Message: flux.Message}
		}
		out = append(out, r)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}
