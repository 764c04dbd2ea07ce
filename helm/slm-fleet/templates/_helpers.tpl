{{/* Chart name, overridable with nameOverride. */}}
{{- define "slm-fleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of object names: the release name, with the chart name appended unless the release name
already contains it (so `helm install slm-fleet` gives "slm-fleet", not "slm-fleet-slm-fleet").
*/}}
{{- define "slm-fleet.fullname" -}}
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

{{/* Name of the operator's Deployment, ServiceAccount default and RBAC objects. */}}
{{- define "slm-fleet.operatorName" -}}
{{- printf "%s-operator" (include "slm-fleet.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "slm-fleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator's pods; never change them after a release (selectors are immutable). */}}
{{- define "slm-fleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slm-fleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels on every object of the chart. */}}
{{- define "slm-fleet.labels" -}}
helm.sh/chart: {{ include "slm-fleet.chart" . }}
{{ include "slm-fleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: slm-fleet
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "slm-fleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "slm-fleet.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "slm-fleet.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (.Values.operator.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "slm-fleet.servingImage" -}}
{{- printf "%s:%s" .Values.serving.image.repository (.Values.serving.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
RBAC rules on the namespaced resources the operator reads and writes; nothing more.
kopf patches ModelFleets (its finalizer and progress annotations) and their status subresource
(conditions); the operator creates each fleet's RayService and patches it when the fleet changes,
and posts Events about fleets. A RayService is deleted with its fleet by garbage collection
(ownerReference), so the operator needs no delete verb.
*/}}
{{- define "slm-fleet.namespacedRules" -}}
- apiGroups: ["slmfleet.io"]
  resources: ["modelfleets"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["slmfleet.io"]
  resources: ["modelfleets/status"]
  verbs: ["get", "patch"]
- apiGroups: ["ray.io"]
  resources: ["rayservices"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- /* Only the fleets' internal-key Secrets (<fleet>-slmfleet-internal, made and read by the operator). The
tenants' keys Secret is mounted into the Ray pods by name and never read by the operator. */}}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
{{- end }}

{{/* kopf lists and watches CRDs to find the resources its handlers name. Cluster-scoped. */}}
{{- define "slm-fleet.crdRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end }}
