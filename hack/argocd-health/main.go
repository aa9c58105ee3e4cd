// Command argocd-health computes Argo CD's health of Kubernetes objects with Argo CD's own
// code: the argocd-cm ConfigMap is read by Argo CD's settings manager, the health script runs
// in Argo CD's gopher-lua sandbox, and gitops-engine decides what happens before the script
// (for example "Pending deletion"), exactly as the application controller does.
//
// Usage: argocd-health ARGOCD_CM_YAML < objects.json > results.json
// stdin is a JSON array of objects; stdout a JSON array of {status, message, error}, in order.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/argoproj/argo-cd/v3/util/lua"
	"github.com/argoproj/argo-cd/v3/util/settings"
	"github.com/argoproj/gitops-engine/pkg/health"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-health ARGOCD_CM_YAML < objects.json")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "argocd-health:", err)
		os.Exit(1)
	}
}

func run(configPath string) error {
	config, err := os.ReadFile(configPath)
	if err != nil {
		return err
	}
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict(config, &cm); err != nil {
		return fmt.Errorf("%s: %w", configPath, err)
	}
	// The settings manager reads the ConfigMap through an informer; an in-memory clientset
	// holding the shipped ConfigMap (and the secret Argo CD always has) feeds it.
	secret := &corev1.Secret{}
	secret.Name, secret.Namespace = "argocd-secret", cm.Namespace
	secret.Labels = map[string]string{"app.kubernetes.io/part-of": "argocd"}
	clientset := fake.NewSimpleClientset(&cm, secret)
	manager := settings.NewSettingsManager(context.Background(), clientset, cm.Namespace)
	overrides, err := manager.GetResourceOverrides()
	if err != nil {
		return fmt.Errorf("argocd-cm: %w", err)
	}

	var raw []json.RawMessage
	if err := json.NewDecoder(os.Stdin).Decode(&raw); err != nil {
		return fmt.Errorf("stdin: %w", err)
	}
	results := make([]result, 0, len(raw))
	for _, item := range raw {
		// Decoded as the API machinery does (integers stay int64), as the controller sees objects.
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(item); err != nil {
			return fmt.Errorf("object: %w", err)
		}
		status, err := health.GetResourceHealth(obj, lua.ResourceHealthOverrides(overrides))
		switch {
		case err != nil:
			// What Argo CD's controller records when the script fails.
			results = append(results, result{Status: string(health.HealthStatusUnknown), Error: err.Error()})
		case status == nil:
			results = append(results, result{Status: "", Message: "no health check"})
		default:
			results = append(results, result{Status: string(status.Status), Message: status.Message})
		}
	}
	return json.NewEncoder(os.Stdout).Encode(results)
}
