package k8s

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// rendered is the base as `kustomize build deploy/k8s/base` renders it,
// each object decoded strictly (an unknown or misspelt field is an error)
// into its Kubernetes API type. No schema registry is reachable offline,
// so this stands in for kubeconform: the API types of k8s.io/api v0.37
// (Kubernetes 1.37) are the schema.
type rendered struct {
	namespaces   []*corev1.Namespace
	services     []*corev1.Service
	configMaps   []*corev1.ConfigMap
	statefulSets []*appsv1.StatefulSet
	daemonSets   []*appsv1.DaemonSet
	pdbs         []*policyv1.PodDisruptionBudget
}

func render(t *testing.T) rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), "base")
	if err != nil {
		t.Fatalf("kustomize build base: %v", err)
	}
	var r rendered
	for _, res := range m.Resources() {
		b, err := res.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		kind, name := res.GetKind(), res.GetName()
		var obj any
		switch kind {
		case "Namespace":
			o := new(corev1.Namespace)
			r.namespaces, obj = append(r.namespaces, o), o
		case "Service":
			o := new(corev1.Service)
			r.services, obj = append(r.services, o), o
		case "ConfigMap":
			o := new(corev1.ConfigMap)
			r.configMaps, obj = append(r.configMaps, o), o
		case "StatefulSet":
			o := new(appsv1.StatefulSet)
			r.statefulSets, obj = append(r.statefulSets, o), o
		case "DaemonSet":
			o := new(appsv1.DaemonSet)
			r.daemonSets, obj = append(r.daemonSets, o), o
		case "PodDisruptionBudget":
			o := new(policyv1.PodDisruptionBudget)
			r.pdbs, obj = append(r.pdbs, o), o
		default:
			t.Fatalf("%s/%s: a kind this test does not check", kind, name)
		}
		if err := yaml.UnmarshalStrict(b, obj); err != nil {
			t.Errorf("%s/%s does not decode strictly into the API type: %v", kind, name, err)
		}
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			t.Errorf("%s/%s: name: %v", kind, name, errs)
		}
		if kind != "Namespace" && res.GetNamespace() != "medmesh" {
			t.Errorf("%s/%s: namespace %q", kind, name, res.GetNamespace())
		}
	}
	return r
}

// TestRenderedManifests checks what the issue asks of the manifests,
// on the rendered objects.
func TestRenderedManifests(t *testing.T) {
	r := render(t)
	if len(r.statefulSets) != 1 || len(r.daemonSets) != 2 || len(r.pdbs) != 1 || len(r.configMaps) != 1 {
		t.Fatalf("rendered %d StatefulSets, %d DaemonSets, %d PDBs, %d ConfigMaps", len(r.statefulSets), len(r.daemonSets), len(r.pdbs), len(r.configMaps))
	}

	// Coordinators: 3 with a volume each, a headless Service publishing
	// not-ready addresses, a PDB that keeps a majority, no capability.
	ss := r.statefulSets[0]
	if ss.Spec.Replicas == nil || *ss.Spec.Replicas != 3 {
		t.Errorf("coordinators: replicas %v, want 3", ss.Spec.Replicas)
	}
	if len(ss.Spec.VolumeClaimTemplates) != 1 || ss.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().IsZero() {
		t.Error("coordinators: no persistent volume claim template with a size")
	}
	var headless *corev1.Service
	for _, s := range r.services {
		if s.Name == ss.Spec.ServiceName {
			headless = s
		}
	}
	if headless == nil || headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("coordinators: service %q is not headless with not-ready addresses published", ss.Spec.ServiceName)
	}
	pdb := r.pdbs[0]
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 2 {
		t.Errorf("PDB minAvailable %v, want 2 of 3 (a Raft majority)", pdb.Spec.MinAvailable)
	}
	if !selects(pdb.Spec.Selector.MatchLabels, ss.Spec.Template.Labels) {
		t.Error("the PDB does not select the coordinators")
	}
	c := ss.Spec.Template.Spec.Containers[0]
	if sc := c.SecurityContext; sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Error("coordinators must drop every capability and add none")
	}
	checkPod(t, "coordinator", ss.Spec.Selector.MatchLabels, ss.Spec.Template, "7403")
	checkSecretsLayout(t, ss.Spec.Template.Spec)

	for _, ds := range r.daemonSets {
		name := ds.Name
		spec := ds.Spec.Template.Spec
		if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
			t.Errorf("%s: wants hostNetwork with ClusterFirstWithHostNet DNS", name)
		}
		c := spec.Containers[0]
		want := []corev1.Capability{"BPF", "NET_ADMIN", "PERFMON"}
		if sc := c.SecurityContext; sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Add, want) ||
			!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: capabilities must be drop ALL, add %v, not privileged", name, want)
		}
		port := map[string]string{"medmesh-node": "7404", "medmesh-enforcer": "7405"}[name]
		checkPod(t, name, ds.Spec.Selector.MatchLabels, ds.Spec.Template, port)
		if name == "medmesh-enforcer" {
			if !mounts(spec, c, "/sys/fs/bpf", "/sys/fs/bpf") {
				t.Error("medmesh-enforcer: the host's bpffs is not mounted at /sys/fs/bpf")
			}
		}
	}
}

// checkPod: the selector selects the template, the image is the one
// kustomize sets, readiness and liveness use /readyz and /healthz on the
// admin port, and Prometheus is told where to scrape.
func checkPod(t *testing.T, name string, sel map[string]string, tpl corev1.PodTemplateSpec, adminPort string) {
	t.Helper()
	if !selects(sel, tpl.Labels) {
		t.Errorf("%s: selector %v does not select the pod labels %v", name, sel, tpl.Labels)
	}
	if len(tpl.Spec.Containers) != 1 {
		t.Fatalf("%s: %d containers", name, len(tpl.Spec.Containers))
	}
	c := tpl.Spec.Containers[0]
	if !strings.HasPrefix(c.Image, "registry.invalid/medmesh:") {
		t.Errorf("%s: image %q: kustomize's images did not apply", name, c.Image)
	}
	var admin *corev1.ContainerPort
	for i, p := range c.Ports {
		if p.Name == "admin" {
			admin = &c.Ports[i]
		}
	}
	if admin == nil || fmt.Sprint(admin.ContainerPort) != adminPort {
		t.Fatalf("%s: no admin port %s", name, adminPort)
	}
	for probe, path := range map[*corev1.Probe]string{c.ReadinessProbe: "/readyz", c.LivenessProbe: "/healthz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != path || probe.HTTPGet.Port.String() != "admin" {
			t.Errorf("%s: want an HTTP probe of %s on the admin port", name, path)
		}
	}
	a := tpl.Annotations
	if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != adminPort || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("%s: Prometheus annotations %v", name, a)
	}
	if c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem ||
		c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
		t.Errorf("%s: wants a read-only root file system and no privilege escalation", name)
	}
	for _, m := range c.VolumeMounts {
		found := false
		for _, v := range tpl.Spec.Volumes {
			found = found || v.Name == m.Name
		}
		if !found && m.Name != "data" {
			t.Errorf("%s: mount %s has no volume", name, m.Name)
		}
	}
	if !slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--config=/etc/medmesh/") }) {
		t.Errorf("%s: no --config", name)
	}
}

// checkSecretsLayout: the coordinators' certificates come from Secrets in
// cert-manager's layout (tls.crt, tls.key, ca.crt), one per replica.
func checkSecretsLayout(t *testing.T, spec corev1.PodSpec) {
	t.Helper()
	var secrets []string
	for _, v := range spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, s := range v.Projected.Sources {
			if s.Secret == nil {
				continue
			}
			secrets = append(secrets, s.Secret.Name)
			for _, it := range s.Secret.Items {
				if !slices.Contains([]string{"tls.crt", "tls.key", "ca.crt"}, it.Key) {
					t.Errorf("secret %s: key %s is not cert-manager's", s.Secret.Name, it.Key)
				}
			}
		}
	}
	if want := []string{"medmesh-coordinator-0-tls", "medmesh-coordinator-1-tls", "medmesh-coordinator-2-tls"}; !slices.Equal(secrets, want) {
		t.Errorf("coordinator secrets %v, want %v", secrets, want)
	}
}

func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func mounts(spec corev1.PodSpec, c corev1.Container, hostPath, at string) bool {
	for _, m := range c.VolumeMounts {
		if m.MountPath != at {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.HostPath != nil && v.HostPath.Path == hostPath {
				return true
			}
		}
	}
	return false
}

// TestStrictDecodingCatchesMistakes: the check above is not vacuous: a
// misspelt field and a wrong type are refused.
func TestStrictDecodingCatchesMistakes(t *testing.T) {
	for _, bad := range []string{
		"apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      hostNetwrok: true\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports:\n    - port: seventy\n",
	} {
		var ds appsv1.DaemonSet
		var svc corev1.Service
		var err error
		if strings.Contains(bad, "DaemonSet") {
			err = yaml.UnmarshalStrict([]byte(bad), &ds)
		} else {
			err = yaml.UnmarshalStrict([]byte(bad), &svc)
		}
		if err == nil {
			t.Errorf("accepted:\n%s", bad)
		}
	}
}

// TestRenderIsStable: rendering twice gives the same bytes (the
// ConfigMap's name hash included), so a CI diff means a real change.
func TestRenderIsStable(t *testing.T) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	var out [2][]byte
	for i := range out {
		m, err := k.Run(filesys.MakeFsOnDisk(), "base")
		if err != nil {
			t.Fatal(err)
		}
		if out[i], err = m.AsYaml(); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(out[0], out[1]) {
		t.Error("two renders differ")
	}
}
