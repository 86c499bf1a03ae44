// Validates the Prometheus Operator resources of the rendered kustomization against the operator's API types
// (@kubernetes-models/prometheus-operator, generated from prometheus-operator's Go API, as its CRDs are), which
// kubernetes-validate has no schemas for. Usage: node validate_crs.mjs CRS.json (from kube_check.py).
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const models = { ServiceMonitor, PrometheusRule };
let failed = 0;
for (const doc of JSON.parse(readFileSync(process.argv[2], "utf8"))) {
  const name = `${doc.kind}/${doc.metadata.name}`;
  try {
    new models[doc.kind](doc).validate();
    console.log(`${name}: valid (monitoring.coreos.com/v1)`);
  } catch (e) {
    console.log(`${name}: INVALID: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
