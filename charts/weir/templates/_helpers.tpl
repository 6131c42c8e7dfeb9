{{/*
Names and labels shared by the templates. Object names follow Helm's usual fullname rule;
cluster-scoped names also carry the release namespace, so that two releases of the same name in
different namespaces do not fight over one ClusterRole.
*/}}

{{- define "weir.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object name: "<release>-weir", or the release name when it contains the chart's name. */}}
{{- define "weir.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* 52 + "-dataplane" stays within the 63 characters of a label value and a Service name. */}}
{{- define "weir.controller.fullname" -}}
{{- printf "%s-controller" (include "weir.fullname" .) }}
{{- end }}

{{- define "weir.dataplane.fullname" -}}
{{- printf "%s-dataplane" (include "weir.fullname" .) }}
{{- end }}

{{/* ClusterRole and ClusterRoleBinding: "<namespace>-<fullname>-controller". */}}
{{- define "weir.controller.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "weir.controller.fullname" .) }}
{{- end }}

{{- define "weir.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; pass (dict "root" $ "component" "controller"). */}}
{{- define "weir.labels" -}}
helm.sh/chart: {{ include "weir.chart" .root }}
{{ include "weir.selectorLabels" . }}
app.kubernetes.io/part-of: weir
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* Labels that select a component's pods; never change them in an upgrade. */}}
{{- define "weir.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weir.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "weir.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The channel's URL, by the controller Service's cluster DNS name. */}}
{{- define "weir.channelURL" -}}
{{- printf "http://%s.%s.svc:8081" (include "weir.controller.fullname" .) .Release.Namespace }}
{{- end }}

{{/* The restricted profile, for pods and for containers; fixed on purpose (see values.yaml). */}}
{{- define "weir.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "weir.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* nodeSelector, tolerations, affinity, spread and priority of a component's pods; pass its values. */}}
{{- define "weir.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}
