// Command argocd-health computes Argo CD's health of Kubernetes objects with Argo CD's own
// code: the argocd-cm ConfigMap is read by Argo CD's settings manager, the health script runs
// in Argo CD's gopher-lua sandbox, and gitops-engine decides what happens before the script
// (for example "Pending deletion"), exactly as the application controller does.
//
// With --script-only the script alone answers, in the same sandbox, as Argo CD's own
// resource-customization tests (util/lua/health_test.go) and `argocd admin settings
// resource-overrides health` run it: nothing is decided before the script.
//
// Usage: argocd-health [--script-only] ARGOCD_CM_YAML < objects.json > results.json
// stdin is a JSON array of objects; stdout a JSON array of {status, message, error}, in order.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	appv1 "github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
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
	args := os.Args[1:]
	scriptOnly := len(args) == 2 && args[0] == "--script-only"
	if scriptOnly {
		args = args[1:]
	}
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: argocd-health [--script-only] ARGOCD_CM_YAML < objects.json")
		os.Exit(2)
	}
	if err := run(args[0], scriptOnly); err != nil {
		fmt.Fprintln(os.Stderr, "argocd-health:", err)
		os.Exit(1)
	}
}

func run(configPath string, scriptOnly bool) error {
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
		var status *health.HealthStatus
		if scriptOnly {
			status, err = scriptHealth(obj, overrides)
		} else {
			status, err = health.GetResourceHealth(obj, lua.ResourceHealthOverrides(overrides))
		}
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

// scriptHealth runs the kind's health script alone, as Argo CD's resource-customization tests
// do: the script found by Argo CD's VM for the object, in the sandbox argocd-cm configures.
func scriptHealth(obj *unstructured.Unstructured, overrides map[string]appv1.ResourceOverride) (*health.HealthStatus, error) {
	vm := lua.VM{ResourceOverrides: overrides}
	script, useOpenLibs, err := vm.GetHealthScript(obj)
	if err != nil || script == "" {
		return nil, err
	}
	vm.UseOpenLibs = useOpenLibs
	return vm.ExecuteHealthLua(obj, script)
}
