# A Job that runs one cache-pipeline command in the worker Deployment's pod
# template: its image, settings (the ConfigMap, hashed name included), Secret,
# service account, volumes and hardening, without its probes, ports and
# selector labels (docs/operations.md, "Run a command in the cluster").
# $args is the command line, e.g. ["migrate"]. Usage:
#   kubectl -n cache-pipeline get deployment cache-pipeline -o json \
#     | jq -f deploy/kustomize/job-from-deployment.jq --argjson args '["migrate"]' \
#     | kubectl -n cache-pipeline create -f -
{"app.kubernetes.io/part-of": .metadata.name, "app.kubernetes.io/component": $args[0]} as $labels
| {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: {generateName: "\(.metadata.name)-\($args[0])-", labels: $labels},
    spec: {
      backoffLimit: 0,
      activeDeadlineSeconds: 3600,
      ttlSecondsAfterFinished: 604800,
      template: {
        metadata: {labels: $labels},
        spec: (
          .spec.template.spec
          | .restartPolicy = "Never"
          | del(.affinity, .topologySpreadConstraints, .priorityClassName)
          | .containers = [
              .containers[0]
              | .name = $args[0]
              | .args = $args
              | del(.ports, .startupProbe, .livenessProbe, .readinessProbe)
            ]
        )
      }
    }
  }
