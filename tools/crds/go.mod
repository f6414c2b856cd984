// Pins the modules whose CRD YAML Strait's tests apply to the API server
// (scripts/kube-tools.sh copies them into its cache; nothing here is imported, so do not
// run `go mod tidy` in this folder: it would drop the requirements).
//   istio.io/api:            kubernetes/customresourcedefinitions.gen.yaml
//   sigs.k8s.io/gateway-api: config/crd/standard/*.yaml
// (gateway-api v1.7.0 declares go 1.27.0, newer than the machine's Go 1.26.)
module strait.local/tools/crds

go 1.26.0

require (
	istio.io/api v1.32.0
	sigs.k8s.io/gateway-api v1.6.3
)
