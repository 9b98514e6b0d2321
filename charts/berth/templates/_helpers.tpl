{{- define "berth.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "berth.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "berth.selectorLabels" -}}
app.kubernetes.io/name: {{ include "berth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "berth.labels" -}}
{{ include "berth.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "berth.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "berth.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding credentials: the user's, or the one this chart makes. */}}
{{- define "berth.secretName" -}}
{{- default (include "berth.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "berth.hasSecret" -}}
{{- $s := .Values.secrets -}}
{{- if or $s.existingSecret $s.s3.accessKey $s.azure.accountKey $s.gcs.keyfile $s.htpasswd $s.proxyPassword -}}true{{- end -}}
{{- end -}}

{{/* config.yml in distribution's shape; secrets come in as REGISTRY_* variables or files. */}}
{{- define "berth.config" -}}
{{- $storage := dict "delete" (dict "enabled" .Values.deleteEnabled) -}}
{{- $_ := set $storage "redirect" (dict "disable" .Values.redirect.disable) -}}
{{- if .Values.redirect.publicEndpoint -}}{{- $_ := set $storage.redirect "publicendpoint" .Values.redirect.publicEndpoint -}}{{- end -}}
{{- $_ := set $storage "maintenance" (dict "uploadpurging" (dict "enabled" true "age" .Values.uploadPurging.age "interval" .Values.uploadPurging.interval)) -}}
{{- if eq .Values.storage "filesystem" -}}
{{- $_ := set $storage "filesystem" (dict "rootdirectory" "/var/lib/registry") -}}
{{- else if eq .Values.storage "s3" -}}
{{- $s3 := dict "bucket" .Values.s3.bucket "region" .Values.s3.region "rootdirectory" .Values.s3.rootdirectory "forcepathstyle" .Values.s3.forcePathStyle "chunksize" (int .Values.s3.chunkSize) -}}
{{- if .Values.s3.regionEndpoint -}}{{- $_ := set $s3 "regionendpoint" .Values.s3.regionEndpoint -}}{{- end -}}
{{- $_ := set $storage "s3" $s3 -}}
{{- else if eq .Values.storage "azure" -}}
{{- $az := dict "accountname" .Values.azure.accountName "container" .Values.azure.container "realm" .Values.azure.realm "rootdirectory" .Values.azure.rootdirectory -}}
{{- if .Values.azure.endpoint -}}{{- $_ := set $az "endpoint" .Values.azure.endpoint -}}{{- end -}}
{{- $_ := set $storage "azure" $az -}}
{{- else if eq .Values.storage "gcs" -}}
{{- $gcs := dict "bucket" .Values.gcs.bucket "rootdirectory" .Values.gcs.rootdirectory -}}
{{- if .Values.secrets.gcs.keyfile -}}{{- $_ := set $gcs "keyfile" "/etc/berth/gcs/key.json" -}}{{- end -}}
{{- $_ := set $storage "gcs" $gcs -}}
{{- end -}}
{{- $http := dict "addr" ":5000" -}}
{{- if .Values.metrics.port -}}{{- $_ := set $http "debug" (dict "addr" (printf ":%d" (int .Values.metrics.port))) -}}{{- end -}}
{{- $config := dict "version" 0.1 "log" (dict "level" "info" "formatter" "json") "storage" $storage "http" $http -}}
{{- if .Values.secrets.htpasswd -}}
{{- $_ := set $config "auth" (dict "htpasswd" (dict "realm" "berth" "path" "/etc/berth/auth/htpasswd")) -}}
{{- end -}}
{{- if .Values.proxy.remoteUrl -}}
{{- $proxy := dict "remoteurl" .Values.proxy.remoteUrl -}}
{{- if .Values.proxy.username -}}{{- $_ := set $proxy "username" .Values.proxy.username -}}{{- end -}}
{{- if ne (toString .Values.proxy.ttl) "" -}}{{- $_ := set $proxy "ttl" (toString .Values.proxy.ttl) -}}{{- end -}}
{{- $_ := set $config "proxy" $proxy -}}
{{- end -}}
{{- $gc := dict "enabled" .Values.gc.enabled "interval" .Values.gc.interval "grace" .Values.gc.grace "deleteuntagged" .Values.gc.deleteUntagged "leasettl" .Values.gc.leaseTTL -}}
{{- if .Values.gc.fullInterval }}{{- $_ := set $gc "fullinterval" .Values.gc.fullInterval -}}{{- end }}
{{- $berth := dict "gc" $gc -}}
{{- if .Values.policy -}}{{- $_ := set $berth "policy" (dict "file" "/etc/berth/policy/policy.yml") -}}{{- end -}}
{{- if .Values.oidc -}}{{- $_ := set $berth "oidc" .Values.oidc -}}{{- end -}}
{{- $ui := dict "enabled" .Values.ui.enabled -}}
{{- if .Values.ui.oidc -}}{{- $_ := set $ui "oidc" .Values.ui.oidc -}}{{- end -}}
{{- $_ := set $berth "ui" $ui -}}
{{- if .Values.singleWriter -}}{{- $_ := set $berth "storage" (dict "singlewriter" true) -}}{{- end -}}
{{- $_ := set $config "berth" $berth -}}
{{- toYaml (mustMergeOverwrite $config .Values.configData) -}}
{{- end -}}
