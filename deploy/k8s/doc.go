// Package k8s holds medmesh's Kubernetes manifests (base/, a Kustomize
// base) and the tests that render them with sigs.k8s.io/kustomize/api and
// decode every object strictly into the Kubernetes API types.
package k8s
