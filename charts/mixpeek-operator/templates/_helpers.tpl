{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "mixpeek-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, prefixed with the chart name unless it contains it. */}}
{{- define "mixpeek-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The name of a cluster-scoped object (ClusterRole, ClusterRoleBinding, admission policies and
their bindings): the fullname plus the release namespace, so one release name installed in two
namespaces ("one release per team") never shares or takes over the other's. Up to the 253
characters such names allow; the optional suffix names the object's role.
*/}}
{{- define "mixpeek-operator.clusterScopedName" -}}
{{- $ctx := index . 0 }}
{{- $suffix := index . 1 }}
{{- $base := printf "%s-%s" (include "mixpeek-operator.fullname" $ctx) $ctx.Release.Namespace }}
{{- if $suffix }}{{ $base = printf "%s-%s" $base $suffix }}{{ end }}
{{- $base | trunc 253 | trimSuffix "-" }}
{{- end }}

{{- define "mixpeek-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mixpeek-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mixpeek-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mixpeek-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "mixpeek-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mixpeek-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mixpeek-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Namespaces the operator watches in namespace mode, as a JSON list (empty: cluster-wide).
Mirrors the operator (handlers.run_operator): the namespace of the default credentials
Secret is watched too, so the Secret's rotation is seen at once; kopf then watches every
handled kind there, BucketSyncs included, so that namespace needs the same Role.
*/}}
{{- define "mixpeek-operator.rbacNamespaces" -}}
{{- $namespaces := uniq .Values.watchNamespaces }}
{{- if and $namespaces .Values.credentials.defaultSecretName }}
{{- $namespaces = append $namespaces .Release.Namespace | uniq }}
{{- end }}
{{- toJson $namespaces }}
{{- end }}

{{/*
The operator's permissions, shared by the ClusterRole (cluster-wide) and each Role
(namespace mode). Least privilege: no wildcard, no write to Secrets, no CRD or namespace
access (kopf runs standalone with scanning disabled, so no peering objects either).
*/}}
{{- define "mixpeek-operator.rbacRules" -}}
# --- Watches: kopf's (one list + watch stream per kind and namespace) or, under label shards
# (sharding.mode labels), the operator's own: BucketSyncs with a label selector (its own
# shard; the assigner: all of them), Secrets with a field selector (metadata.name=, one per
# Secret its objects name). Selectors need no other verb than list and watch.
- apiGroups: ["mixpeek.com"]
  resources: ["bucketsyncs"]
  verbs: ["list", "watch"]
# Secrets are watched so a rotated key re-reconciles its BucketSyncs at once.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["list", "watch"]
# --- Application: the reconcile engine's own calls ---
# get: re-read an object before a conditional finalizer edit, and check that the owner a
# remote sync's ownership marker names still exists; patch: add/remove our finalizer and,
# under label shards, the shard labels and annotation (shard.mixpeek.com/owner, drain-to,
# drained-by: merge patches of metadata pinned to the resourceVersion read).
- apiGroups: ["mixpeek.com"]
  resources: ["bucketsyncs"]
  verbs: ["get", "patch"]
# create: only a server-side dry run (dryRun=All, nothing stored) before the pod reports
# healthy, so it is Ready only once the API server admits BucketSync creates (docs/admission.md).
- apiGroups: ["mixpeek.com"]
  resources: ["bucketsyncs"]
  verbs: ["create"]
# Conditions, observedGeneration, remote state and metrics live in the status subresource.
- apiGroups: ["mixpeek.com"]
  resources: ["bucketsyncs/status"]
  verbs: ["patch"]
# Read the credentials Secret named by spec.credentialsRef (or the default one). patch: only
# the in-use finalizer mixpeek.com/secret-in-use on Secrets a BucketSync names, so that
# helm uninstall / a GitOps prune deleting the Secret first cannot strand the remote sync
# (a JSON patch of metadata.finalizers pinned to a resourceVersion; data is never written).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "patch"]
# Events on transitions (Created, Updated, Stalled, ...); core/v1, create only.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* "true" when the replicas elect a leader: never with sharding; leaderElection.enabled, else always. */}}
{{- define "mixpeek-operator.leaderElection" -}}
{{- $enabled := .Values.leaderElection.enabled }}
{{- if .Values.sharding.enabled }}
{{- false }}
{{- else if kindIs "invalid" $enabled }}
{{- /* On with one replica too (as controller-runtime scaffolds do): an upgrade to more
replicas then never runs a pod that writes without the Lease beside pods that elect. */}}
{{- true }}
{{- else }}
{{- $enabled }}
{{- end }}
{{- end }}

{{- define "mixpeek-operator.leaseName" -}}
{{- default (include "mixpeek-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
A map as YAML without its null entries: `--set securityContext.runAsUser=null` removes a key
the chart's defaults set, but a null given for a key they do not set stays in the values.
*/}}
{{- define "mixpeek-operator.withoutNulls" -}}
{{- $kept := dict }}
{{- range $key, $value := . }}
{{- if not (kindIs "invalid" $value) }}
{{- $_ := set $kept $key $value }}
{{- end }}
{{- end }}
{{- toYaml $kept }}
{{- end }}
