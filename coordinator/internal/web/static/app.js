// medmesh console: plain ES module, no build step, no third-party code.
// Every URL is relative, so the console works under a reverse proxy's
// path. Data comes from the coordinator's gRPC services over the Connect
// protocol (JSON); every call carries the session's CSRF token.

const $ = (sel) => document.querySelector(sel);
let me = null; // {identity, role, name, csrf, expires}
let stopStreams = [];

// ---- calls -------------------------------------------------------------

function newRequestId() {
  return crypto.randomUUID();
}

// rpc calls a method; while the cluster elects a leader (UNAVAILABLE) it
// retries a few times with backoff: reads are idempotent and every write
// carries a request id, which the coordinators apply at most once.
export async function rpc(service, method, body = {}) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await rpcOnce(service, method, body);
    } catch (e) {
      if (e.code !== "unavailable" || attempt >= 5) throw e;
      await new Promise((res) => setTimeout(res, 200 * 2 ** attempt));
    }
  }
}

async function rpcOnce(service, method, body) {
  const r = await fetch(`medmesh.v1.${service}/${method}`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "Connect-Protocol-Version": "1", "X-CSRF-Token": me ? me.csrf : "" },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch { data = { message: text }; }
  if (r.status === 401) { showLogin(); }
  if (!r.ok) {
    const err = new Error(data.message || data.error || `${r.status}`);
    err.code = data.code || String(r.status);
    throw err;
  }
  return data;
}

// stream runs a Connect server-streaming call, calling onMessage for each
// message, until stop() is called or the server ends it.
function stream(service, method, body, onMessage) {
  const ctl = new AbortController();
  const json = new TextEncoder().encode(JSON.stringify(body));
  const env = new Uint8Array(5 + json.length);
  new DataView(env.buffer).setUint32(1, json.length);
  env.set(json, 5);
  const run = async () => {
    const r = await fetch(`medmesh.v1.${service}/${method}`, {
      method: "POST", credentials: "same-origin", signal: ctl.signal,
      headers: { "Content-Type": "application/connect+json", "Connect-Protocol-Version": "1", "X-CSRF-Token": me.csrf },
      body: env,
    });
    if (!r.ok) throw new Error(`stream ${method}: ${r.status}`);
    const reader = r.body.getReader();
    let buf = new Uint8Array(0);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      const nb = new Uint8Array(buf.length + value.length);
      nb.set(buf); nb.set(value, buf.length); buf = nb;
      while (buf.length >= 5) {
        const flags = buf[0];
        const len = new DataView(buf.buffer, buf.byteOffset).getUint32(1);
        if (buf.length < 5 + len) break;
        const msg = JSON.parse(new TextDecoder().decode(buf.subarray(5, 5 + len)));
        buf = buf.slice(5 + len);
        if (flags & 2) { if (msg.error) throw new Error(msg.error.message); return; }
        onMessage(msg);
      }
    }
  };
  const done = run().catch((e) => {
    if (e.name === "AbortError") return;
    window.medmeshStreamError = String(e.stack || e);
    status(`live updates stopped: ${e.message}`, true);
  });
  return { stop: () => ctl.abort(), done };
}

// ---- rendering helpers -------------------------------------------------

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}

const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
// Times in the viewer's local time, with the zone shown.
function when(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  const s = d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short" });
  return el("time", { datetime: d.toISOString(), title: zone }, s);
}

function enumText(v, prefix) {
  if (!v) return "unknown";
  return String(v).replace(prefix, "").toLowerCase().replaceAll("_", "-");
}

// Tiers and severities are always text; colour only repeats them.
function tier(t) {
  const s = enumText(t, "TIER_");
  const label = s === "unspecified" || s === "unknown" ? "unknown (treated as life-critical)" : s;
  return el("span", { class: `badge tier-${s}` }, label);
}

function severity(score) {
  const n = score || 0;
  const s = n >= 80 ? "critical" : n >= 60 ? "high" : n >= 30 ? "medium" : "low";
  return el("span", { class: `badge sev-${s}` }, `${s} (${n})`);
}

function table(headers, rows, caption) {
  return el("table", {},
    caption ? el("caption", { class: "visually-hidden" }, caption) : null,
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows));
}

function status(msg, isError = false) {
  const s = $("#status");
  s.textContent = msg;
  s.className = isError ? "error" : "";
}

function page(title, ...kids) {
  const p = $("#page");
  p.replaceChildren(el("h1", {}, title), ...kids);
  document.title = `${title} — medmesh`;
}

async function guarded(fn) {
  try { await fn(); } catch (e) { status(`${e.code ? e.code + ": " : ""}${e.message}`, true); }
}

// ---- pages -------------------------------------------------------------

const TIERS = ["TIER_LIFE_CRITICAL", "TIER_CLINICAL", "TIER_NON_CLINICAL"];

const CLASSES = ["INFUSION_PUMP", "PATIENT_MONITOR", "VENTILATOR", "CENTRAL_STATION", "IMAGING_MODALITY", "PACS", "HL7_INTERFACE_ENGINE",
  "NURSE_CALL", "BUILDING_AUTOMATION", "NETWORK_INFRASTRUCTURE", "IT_WORKSTATION", "ROUTER", "DHCP_DNS_SERVER", "NTP_SERVER",
  "SYSLOG_SERVER", "DIRECTORY_SERVER", "UNKNOWN"].map((c) => "DEVICE_CLASS_" + c);
// Posture bands of a risk score, as the compliance report bands them.
const BANDS = [["critical", 70], ["high", 40], ["medium", 15], ["low", 1]];
const TOP_MAX = 1000; // RiskService.Top's most

function band(score) {
  for (const [b, min] of BANDS) if (score >= min) return b;
  return "none";
}

async function overview() {
  const [all, pending, open, cluster, top, ...counts] = await Promise.all([
    rpc("InventoryService", "ListDevices", { pageSize: 1 }),
    rpc("DecisionService", "ListDecisions", { state: "DECISION_STATE_PENDING_APPROVAL", pageSize: 1000 }),
    rpc("AlertService", "ListAlerts", { state: "ALERT_STATE_OPEN", pageSize: 1000 }),
    rpc("ClusterService", "GetClusterStatus", {}),
    rpc("RiskService", "Top", { n: TOP_MAX }),
    ...TIERS.map((t) => rpc("InventoryService", "ListDevices", { pageSize: 1, tier: t })),
    ...CLASSES.map((c) => rpc("InventoryService", "ListDevices", { pageSize: 1, deviceClass: c })),
  ]);
  const byTier = counts.slice(0, TIERS.length);
  const byClass = counts.slice(TIERS.length);
  const total = all.totalSize || 0;
  const card = (label, n, href) => el("div", { class: "card" }, el("div", { class: "n" }, n), href ? el("a", { href }, label) : label);
  const members = cluster.members || cluster.servers || [];
  // Posture bands: RiskService.Top lists every device with a score above
  // 0, highest first, at most TOP_MAX; when it is full the lowest band
  // it reaches may have more ("+") and "none" is at most what is left.
  const postures = top.postures || [];
  const full = postures.length >= TOP_MAX;
  const bandCount = Object.fromEntries(BANDS.map(([b]) => [b, 0]));
  for (const p of postures) bandCount[band((p.score && p.score.score) || 0)]++;
  const lowest = full ? band((postures[postures.length - 1].score || {}).score || 0) : null;
  const bandRows = BANDS.map(([b], i) => {
    const n = full && BANDS.findIndex((x) => x[0] === lowest) < i ? "?" : bandCount[b] + (b === lowest ? "+" : "");
    return el("tr", { "data-band": b }, el("th", { scope: "row" }, el("span", { class: `badge sev-${b}` }, b)), el("td", {}, n));
  });
  const none = total - postures.length;
  bandRows.push(el("tr", { "data-band": "none" }, el("th", { scope: "row" }, el("span", { class: "badge" }, "none (no finding, or not assessed)")), el("td", {}, full ? `at most ${none}` : none)));
  const classRows = CLASSES.map((c, i) => [c, byClass[i].totalSize || 0]).filter(([, n]) => n > 0)
    .map(([c, n]) => el("tr", { "data-class": c }, el("th", { scope: "row" }, el("a", { href: "#/inventory?class=" + c }, enumText(c, "DEVICE_CLASS_"))), el("td", {}, n)));
  const unclassified = total - byClass.reduce((sum, r) => sum + (r.totalSize || 0), 0);
  if (unclassified > 0) classRows.push(el("tr", { "data-class": "DEVICE_CLASS_UNSPECIFIED" }, el("th", { scope: "row" }, "not classified"), el("td", {}, unclassified)));
  page("Campus overview",
    el("div", { class: "cards" },
      card("devices", total, "#/inventory"),
      ...TIERS.map((t, i) => card(`${enumText(t, "TIER_")} devices`, byTier[i].totalSize || 0, "#/inventory?tier=" + t)),
      card("open alerts", (open.alerts || []).length + (open.nextPageToken ? "+" : ""), "#/alerts"),
      card("decisions waiting for approval", (pending.decisions || []).length, "#/approvals"),
      card("coordinators", members.length || "?", null)),
    el("div", { class: "cols" },
      el("section", { "aria-labelledby": "by-class" }, el("h2", { id: "by-class" }, "Devices by class"),
        table(["Class", "Devices"], classRows, "Devices by class")),
      el("section", { "aria-labelledby": "by-posture" }, el("h2", { id: "by-posture" }, "Devices by risk posture band"),
        table(["Band", "Devices"], bandRows, "Devices by risk posture band"),
        el("p", { class: "muted" }, "Bands of the risk posture score: critical ≥ 70, high ≥ 40, medium ≥ 15, low > 0."))));
}

async function inventory(params) {
  const form = el("form", { class: "filters", role: "search" },
    el("label", {}, "Search (MAC, address, vendor, model, host)", el("input", { name: "query", type: "search", value: params.get("query") || "" })),
    el("label", {}, "Tier", el("select", { name: "tier" }, el("option", { value: "" }, "any"),
      TIERS.map((t) => el("option", { value: t, selected: params.get("tier") === t }, enumText(t, "TIER_"))))),
    el("label", {}, "Class", el("select", { name: "class" }, el("option", { value: "" }, "any"),
      CLASSES.map((c) => el("option", { value: c, selected: params.get("class") === c }, enumText(c, "DEVICE_CLASS_"))))),
    el("label", {}, "Floor", el("input", { name: "floor", size: 6, value: params.get("floor") || "" })),
    el("label", {}, "Zone", el("input", { name: "zone", size: 8, value: params.get("zone") || "" })),
    el("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, v);
    location.hash = "#/inventory?" + q.toString();
  });
  const req = { pageSize: 50, pageToken: params.get("page") || "" };
  for (const k of ["query", "tier", "floor", "zone"]) if (params.get(k)) req[k] = params.get(k);
  if (params.get("class")) req.deviceClass = params.get("class");
  const resp = await rpc("InventoryService", "ListDevices", req);
  const rows = (resp.devices || []).map((d) => el("tr", {},
    el("td", {}, el("a", { href: "#/device?mac=" + encodeURIComponent(d.mac) }, d.mac)),
    el("td", {}, (d.ipAddresses || []).join(", ")),
    el("td", {}, enumText(d.deviceClass, "DEVICE_CLASS_")),
    el("td", {}, tier(d.tier)),
    el("td", {}, [d.vendor, d.model].filter(Boolean).join(" ")),
    el("td", {}, [d.location && d.location.floor, d.location && d.location.zone].filter(Boolean).join(" / ")),
    el("td", {}, severity(d.risk && d.risk.score))));
  const next = new URLSearchParams(params);
  if (resp.nextPageToken) next.set("page", resp.nextPageToken);
  page("Inventory", form,
    el("p", { id: "result-count" }, `${resp.totalSize || 0} devices match`),
    table(["MAC", "Addresses", "Class", "Tier", "Vendor / model", "Floor / zone", "Risk"], rows, "Devices"),
    resp.nextPageToken ? el("a", { href: "#/inventory?" + next.toString() }, "Next page") : null);
}

// optional runs a read that may answer NOT_FOUND (a device not assessed
// yet): null then, any other error thrown.
async function optional(service, method, body) {
  try { return await rpc(service, method, body); } catch (e) { if (e.code === "not_found") return null; throw e; }
}

const PROTOCOLS = { 1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp" };
function service(p) {
  const proto = PROTOCOLS[p.protocol] || (p.protocol ? `proto ${p.protocol}` : "any");
  return `${proto}${p.port ? "/" + p.port : ""}${p.app ? " " + p.app : ""}`;
}

// segmentText names a segment in words: "building A / floor 3 / zone icu".
function segmentText(s) {
  if (!s) return "";
  if (s.outside) return "outside the inventory";
  const parts = [s.campus && `campus ${s.campus}`, s.building && `building ${s.building}`, s.floor && `floor ${s.floor}`, s.zone && `zone ${s.zone}`].filter(Boolean);
  return parts.length ? parts.join(" / ") : "no location recorded";
}

function bytes(n) {
  n = Number(n || 0);
  if (n < 1024) return `${n} B`;
  const u = ["KiB", "MiB", "GiB", "TiB"];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
  return `${n.toFixed(1)} ${u[i]}`;
}

function section(id, title, ...kids) {
  return el("section", { id, "aria-labelledby": id + "-h" }, el("h2", { id: id + "-h" }, title), ...kids);
}

const IDENTIFIERS = [["dicomAeTitles", "DICOM AE titles"], ["hl7Udis", "HL7 UDIs"], ["hl7SendingApplications", "HL7 sending applications"],
  ["hl7SendingFacilities", "HL7 sending facilities"], ["hl7Software", "HL7 software"], ["dhcpHostname", "DHCP host name"], ["dhcpVendorClass", "DHCP vendor class"],
  ["dhcpFingerprint", "DHCP fingerprint"], ["dhcpClientId", "DHCP client id"], ["dhcpFqdn", "DHCP FQDN"], ["mudUrl", "MUD URL"], ["friendlyNames", "SSDP/mDNS names"],
  ["dicomImplementations", "DICOM implementations"], ["serverNames", "Server names (SNI, Host)"], ["userAgents", "HTTP user agents"], ["httpServers", "HTTP Server headers"],
  ["ssdpServers", "SSDP SERVER headers"], ["snmpSysDescr", "SNMP sysDescr"], ["snmpSysName", "SNMP sysName"]];

function findingRow(f) {
  return el("tr", { "data-finding": `${f.kind}:${f.id}` },
    el("td", {}, el("span", { class: `badge sev-${f.severity || "low"}` }, f.severity || "unrated")),
    el("td", {}, f.kind), el("td", {}, f.id), el("td", {}, f.summary || ""),
    el("td", {}, f.confidence || ""), el("td", {}, f.source || ""), el("td", {}, f.suppressed ? `suppressed: ${f.suppressed}` : longText(f.remediation || f.fixedVersion || "")));
}

// longText shows the first words of a long text and the rest on request.
function longText(t) {
  if (t.length <= 120) return t;
  return el("details", {}, el("summary", {}, t.slice(0, 100) + "…"), t);
}

async function device(params) {
  const mac = params.get("mac");
  const [got, traffic, posture] = await Promise.all([
    rpc("InventoryService", "GetDevice", { mac }),
    rpc("CampusService", "GetDeviceTraffic", { deviceMac: mac }),
    optional("RiskService", "GetPosture", { deviceMac: mac }),
  ]);
  const d = got.device;
  const dl = (pairs) => el("dl", {}, pairs.filter(([, v]) => v !== "" && v !== null && v !== undefined).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const out = el("div", { id: "policy-flow" });
  const ids = d.identifiers || {};
  const idPairs = IDENTIFIERS.map(([k, label]) => [label, Array.isArray(ids[k]) ? ids[k].join(", ") : (ids[k] || "")]);
  const evidence = (d.classEvidence || []).map((e) => el("tr", { "data-source": e.source },
    el("td", {}, e.source), el("td", {}, e.detail || ""), el("td", {}, (e.weight || 0).toFixed(2))));
  const identity = section("identity", "Identity and its evidence",
    dl([["Class", `${enumText(d.deviceClass, "DEVICE_CLASS_")} (confidence ${Math.round((d.classConfidence || 0) * 100)}%)`],
      ["Tier", el("span", {}, tier(d.tier), d.tierOverridden ? " (set by an operator)" : "")], ["Vendor", d.vendor || ""], ["Model", d.model || ""],
      ["Firmware", d.firmware || ""], ["Host name", d.hostname || ""], ["Addresses", (d.ipAddresses || []).join(", ")],
      ["Location", segmentText(traffic.segment)], ["Site (flow export)", d.site || ""],
      ["Enforcement", d.advisory ? "advisory only: no inline enforcer on its path (decisions go to a gateway or NAC)" : ""],
      ["First seen", when(d.firstSeen)], ["Last seen", when(d.lastSeen)], ["Last sensor", d.lastSensorId || ""],
      ["Risk", severity(d.risk && d.risk.score)]]),
    el("h3", {}, "Why this class"),
    evidence.length ? table(["Source", "What was observed", "Weight"], evidence, "Classification evidence") : el("p", {}, "No evidence recorded for this class."),
    el("h3", {}, "Identifiers seen in its traffic"),
    idPairs.some(([, v]) => v) ? dl(idPairs) : el("p", {}, "No identifier extracted."),
    (d.absentEvidence || []).length ? el("p", { id: "absent-evidence" }, "Evidence the sensors could not have about this device: ", d.absentEvidence.join(", "), ".") : null);

  // Baseline peers and protocols, with the recent flows per peer.
  const peers = traffic.peers || [];
  const peerRows = peers.map((p) => el("tr", { "data-peer": p.peer },
    el("td", {}, p.peer, p.peerName ? ` (${p.peerName})` : ""),
    el("td", {}, p.peerMac ? el("a", { href: "#/device?mac=" + encodeURIComponent(p.peerMac) }, p.peerMac) : "not an inventory device"),
    el("td", {}, service(p)), el("td", {}, enumText(p.direction, "DIRECTION_")),
    el("td", {}, p.inBaseline ? "yes" : "no (not learned)"),
    el("td", {}, p.flows || 0), el("td", {}, `${bytes(p.bytesOut)} / ${bytes(p.bytesIn)}`), el("td", {}, when(p.lastSeen)),
    el("td", {}, p.crosses ? `yes: ${segmentText(p.peerSegment)}` : "no")));
  const base = traffic.hasBaseline
    ? el("p", { id: "baseline-info" }, `${traffic.classBaseline ? "Class baseline (the device has none of its own)" : "Baseline"} version ${traffic.baselineVersion || 0}, frozen `,
      when(traffic.baselineFreezeTime), traffic.baselineSensorId ? ` by sensor ${traffic.baselineSensorId}` : "", ". Protocols: ",
      (traffic.baselineProtocols || []).join(", ") || "none named", ".")
    : el("p", { id: "baseline-info" }, "No frozen baseline yet for this device or its class.");
  const flowsInfo = traffic.flowSummaries
    ? el("p", { id: "flows-summary" }, `Recent flows: ${traffic.flowSummaries} flow summaries counting ${traffic.flows || 0} flows since `, when(traffic.flowsSince),
      " (the coordinators keep each device's latest 1,000 summaries, not single flows).")
    : el("p", { id: "flows-summary" }, "The coordinators hold no flow summary for this device: the peers below come from its baseline only, with no flow counts.");
  const peersSection = section("peers", "Baseline peers and recent flows", base, flowsInfo,
    peerRows.length ? table(["Peer", "Inventory device", "Service", "Direction", "In baseline", "Flows", "Bytes out / in", "Last seen", "Crosses segment"], peerRows, "Peers")
      : el("p", {}, "No peer known."));

  // Findings and recalls (risk posture).
  const findings = (posture && posture.posture && posture.posture.findings) || [];
  const recalls = findings.filter((f) => f.kind === "recall");
  const others = findings.filter((f) => f.kind !== "recall");
  const post = posture && posture.posture;
  const findingsSection = section("findings", "Findings",
    post ? el("p", {}, `Risk posture ${(post.score && post.score.score) || 0} of 100, assessed `, when(post.assessTime),
      post.bundleDigest ? ` with intelligence bundle ${post.bundleDigest.slice(0, 12)}` : " without an intelligence bundle", ".",
      post.truncated ? ` ${post.truncated} more findings not listed.` : "")
      : el("p", {}, "Not assessed yet."),
    others.length ? table(["Severity", "Kind", "Id", "Summary", "Confidence", "Source", "Remediation"], others.map(findingRow), "Findings") : el("p", {}, "No finding."));
  const recallRows = recalls.map((f) => el("tr", { "data-recall": f.recallNumber || f.id },
    el("td", {}, f.recallNumber || f.id), el("td", {}, f.recallClass || ""), el("td", {}, el("span", { class: `badge sev-${f.severity || "low"}` }, f.severity || "unrated")),
    el("td", {}, f.product || ""), el("td", {}, f.reason || f.summary || ""), el("td", {}, f.confidence || ""), el("td", {}, f.source || "")));
  const recallsSection = section("recalls", "Recalls",
    recallRows.length ? table(["Recall", "Class", "Severity", "Product", "Reason", "Confidence", "Source"], recallRows, "Recalls") : el("p", {}, post ? "No recall matches this device." : "Not assessed yet."));

  // Policy in force and what a generated one would drop.
  const pol = traffic.policies || [];
  const polRows = pol.map((p) => el("tr", {}, el("td", {}, p.name), el("td", {}, enumText(p.mode, "POLICY_MODE_")), el("td", {}, p.active ? "active" : "inactive"),
    el("td", {}, p.version || ""), el("td", {}, p.updatedBy || ""), el("td", {}, when(p.updateTime))));
  const active = pol.find((p) => p.active);
  const cp = traffic.classPolicy;
  const inForce = active ? `Policy ${active.name} is active in ${enumText(active.mode, "POLICY_MODE_")} mode.`
    : cp ? `No policy of its own is active; its class's policy ${cp.name} applies in ${enumText(cp.mode, "POLICY_MODE_")} mode.`
      : "No policy applies: the device is not restricted.";
  const gen = traffic.generated;
  const dropRows = peers.filter((p) => Number(p.wouldDrop || 0) > 0).map((p) => el("tr", { "data-drop": p.peer },
    el("td", {}, p.peer, p.peerName ? ` (${p.peerName})` : ""), el("td", {}, service(p)), el("td", {}, enumText(p.direction, "DIRECTION_")),
    el("td", {}, `${p.wouldDrop} of ${p.flows}`)));
  const wouldDrop = el("div", { id: "would-drop" },
    gen ? el("p", {}, `A policy generated from the ${traffic.classBaseline ? "class " : ""}baseline would allow ${gen.flowsAllowed || 0} and drop ${gen.flowsDropped || 0} of the ${gen.flowsTotal || 0} recent flows.`)
      : el("p", {}, `No policy can be generated: ${traffic.generateError || "no baseline"}.`),
    dropRows.length ? table(["Peer", "Service", "Direction", "Flows dropped"], dropRows, "Flows a generated policy would drop, per peer") : null);
  const policySection = section("device-policy", "Policy",
    el("p", { id: "policy-in-force" }, inForce),
    polRows.length ? table(["Name", "Mode", "Active", "Version", "Updated by", "Updated"], polRows, "The device's policies") : null,
    el("h3", {}, "What a generated policy would drop"), wouldDrop,
    el("h3", {}, "Generate, simulate, monitor, enforce"),
    el("p", {}, "Generate a policy from the device's baseline, see what it would drop, then run it in monitor mode and finally enforce it (operators generate and monitor; approvers enforce)."),
    me.role === "viewer" ? el("p", {}, "Viewers can read this page; changing a policy needs an operator or approver.")
      : el("button", { id: "generate", type: "button", onclick: () => guarded(() => generate(d, out)) }, "Generate policy"),
    out);
  page(`Device ${d.mac}`,
    el("nav", { class: "toc", "aria-label": "On this page" }, [["identity", "Identity"], ["peers", "Peers and flows"], ["findings", "Findings"], ["recalls", "Recalls"], ["device-policy", "Policy"]]
      .map(([id, label]) => el("a", { href: "#" + id, onclick: (ev) => { ev.preventDefault(); document.getElementById(id).scrollIntoView(); document.getElementById(id + "-h").focus(); } }, label))),
    identity, peersSection, findingsSection, recallsSection, policySection);
  for (const h of document.querySelectorAll("#page section > h2")) h.tabIndex = -1;
}

function simulationView(sim) {
  const rows = (sim.dropped || []).map((f) => el("tr", {},
    el("td", {}, f.flow.peerName || f.flow.peerIp), el("td", {}, `${f.flow.port || ""}/${f.flow.protocol || ""}`),
    el("td", {}, f.flow.flows || 0), el("td", {}, f.verdict || "drop")));
  return el("div", { id: "simulation" },
    el("p", {}, `Of ${sim.flowsTotal || 0} recent flows, ${sim.flowsAllowed || 0} allowed and ${sim.flowsDropped || 0} would be dropped.`),
    rows.length ? table(["Peer", "Port/protocol", "Flows", "Verdict"], rows, "Flows the policy would drop") : el("p", {}, "Nothing would be dropped."));
}

async function generate(d, out) {
  const gen = await rpc("PolicyService", "GeneratePolicy", { deviceMac: d.mac, mode: "POLICY_MODE_MONITOR" });
  const policy = gen.policy;
  const steps = el("div", {});
  const sim = el("div", {}, simulationView(gen.simulation || {}));
  out.replaceChildren(el("h3", {}, `Generated policy ${policy.name}`),
    el("pre", {}, (policy.rules || []).map((r) => `${enumText(r.direction, "DIRECTION_")} ${r.peerCidr || r.peerDnsName || "any peer"} port ${r.portMin || "any"}${r.portMax && r.portMax !== r.portMin ? "-" + r.portMax : ""} protocol ${r.protocol || "any"}`).join("\n")),
    el("button", { id: "simulate", type: "button", onclick: () => guarded(async () => {
      const s = await rpc("PolicyService", "SimulatePolicy", { policy, deviceMac: d.mac });
      sim.replaceChildren(simulationView(s.simulation || {}));
      status("simulated");
    }) }, "Simulate"),
    sim,
    el("button", { id: "monitor", type: "button", onclick: () => guarded(async () => {
      const p = { ...policy, mode: "POLICY_MODE_MONITOR" };
      await rpc("PolicyService", "PutPolicy", { policy: p, reason: "from the console", requestId: newRequestId() });
      const a = await rpc("PolicyService", "ActivatePolicy", { name: policy.name, mode: "POLICY_MODE_MONITOR", reason: "monitor from the console", requestId: newRequestId() });
      steps.replaceChildren(el("p", { id: "monitor-result" }, `Monitoring: decision ${a.decisionId || ""}.`));
      status("policy in monitor mode");
    }) }, "Monitor"),
    el("button", { id: "enforce", type: "button", onclick: () => guarded(async () => {
      const a = await rpc("PolicyService", "ActivatePolicy", { name: policy.name, mode: "POLICY_MODE_ENFORCE", reason: "enforce from the console", requestId: newRequestId() });
      const state = a.policy && a.policy.mode;
      steps.replaceChildren(el("p", { id: "enforce-result", "data-decision": a.decisionId || "" }, `Enforce requested: decision ${a.decisionId || ""} (${enumText(state, "POLICY_MODE_")}). A life-critical device's decision waits for a second approver.`));
      status("enforce requested");
    }) }, "Enforce"),
    steps);
}

async function alerts() {
  const resp = await rpc("AlertService", "ListAlerts", { pageSize: 200 });
  const body = el("tbody", { id: "alert-rows" });
  const row = (a) => el("tr", { id: "alert-" + a.id },
    el("td", {}, when(a.createTime)), el("td", {}, severity(a.risk && a.risk.score)), el("td", {}, a.kind),
    el("td", {}, el("a", { href: "#/device?mac=" + encodeURIComponent(a.deviceMac || "") }, a.deviceMac || "")), el("td", {}, tier(a.tier)),
    el("td", {}, a.summary || ""), el("td", {}, enumText(a.state, "ALERT_STATE_")),
    el("td", {}, a.state === "ALERT_STATE_OPEN" && me.role !== "viewer"
      ? el("button", { type: "button", class: "secondary", "aria-label": `Acknowledge alert ${a.id}`, onclick: () => guarded(async () => {
        const r = await rpc("AlertService", "AcknowledgeAlert", { id: a.id, note: "acknowledged in the console", requestId: newRequestId() });
        const fresh = row(r.alert || { ...a, state: "ALERT_STATE_ACKNOWLEDGED" });
        document.getElementById("alert-" + a.id).replaceWith(fresh);
        status(`alert ${a.id} acknowledged`);
      }) }, "Acknowledge")
      : a.acknowledgedBy || ""));
  const list = (resp.alerts || []).slice().reverse();
  body.append(...list.map(row));
  page("Alerts", el("p", {}, "New alerts appear at the top as they are committed."),
    el("table", {}, el("thead", {}, el("tr", {}, ["Time", "Severity", "Kind", "Device", "Tier", "Summary", "State", ""].map((h) => el("th", { scope: "col" }, h)))), body));
  const last = Math.max(0, ...list.map((a) => Number(a.index || 0)));
  const st = stream("AlertService", "WatchAlerts", { fromIndex: String(last + 1) }, (m) => {
    if (!m.alert) return;
    const existing = document.getElementById("alert-" + m.alert.id);
    const r = row(m.alert);
    if (existing) existing.replaceWith(r);
    else { r.classList.add("new"); body.prepend(r); status(`new alert on ${m.alert.deviceMac}`); }
  });
  stopStreams.push(st.stop);
}

async function approvals() {
  const resp = await rpc("DecisionService", "ListDecisions", { state: "DECISION_STATE_PENDING_APPROVAL", pageSize: 500 });
  const note = el("p", { id: "approval-result", role: "status" });
  const act = (d, approve) => guarded(async () => {
    note.textContent = "";
    try {
      const method = approve ? "ApproveDecision" : "RejectDecision";
      await rpc("DecisionService", method, { id: d.id, reason: `${approve ? "approved" : "rejected"} in the console`, requestId: newRequestId() });
      note.textContent = `Decision ${d.id} ${approve ? "approved" : "rejected"}.`;
      await approvals();
      $("#approval-result").textContent = note.textContent;
    } catch (e) {
      note.textContent = `Refused: ${e.message}`;
      note.className = "error";
    }
  });
  const rows = (resp.decisions || []).map((d) => el("tr", { id: "decision-" + d.id },
    el("td", {}, when(d.createTime)), el("td", {}, enumText(d.action, "DECISION_ACTION_")),
    el("td", {}, d.deviceMac || ""), el("td", {}, tier(d.tier)), el("td", {}, d.reason || ""),
    el("td", {}, d.actor || ""), el("td", {}, d.alertId || ""),
    el("td", {}, el("button", { type: "button", "data-approve": d.id, onclick: () => act(d, true) }, "Approve"), " ",
      el("button", { type: "button", class: "secondary", "data-reject": d.id, onclick: () => act(d, false) }, "Reject"))));
  page("Approvals", el("p", {}, "Life-critical decisions wait for an approver. Two-person rule: the identity that caused a decision cannot approve it; viewers cannot approve."),
    note, rows.length ? table(["Created", "Action", "Device", "Tier", "Reason", "Caused by", "Alert", ""], rows, "Pending decisions") : el("p", { id: "no-pending" }, "Nothing waits for approval."));
}

async function policies() {
  const resp = await rpc("PolicyService", "ListPolicies", {});
  const rows = (resp.policies || []).map((p) => el("tr", {},
    el("td", {}, p.name), el("td", {}, p.deviceMac || enumText(p.deviceClass, "DEVICE_CLASS_")), el("td", {}, enumText(p.mode, "POLICY_MODE_")),
    el("td", {}, p.active ? "active" : "inactive"), el("td", {}, p.version || ""), el("td", {}, p.updatedBy || ""), el("td", {}, when(p.updateTime))));
  page("Policies", el("p", {}, "To make one, open a device from the inventory and generate its policy."),
    table(["Name", "Applies to", "Mode", "Active", "Version", "Updated by", "Updated"], rows, "Policies"));
}

async function audit(params) {
  const req = { pageSize: 100 };
  if (params.get("page")) req.pageToken = params.get("page");
  const resp = await rpc("PolicyService", "ListAuditRecords", req);
  const rows = (resp.records || []).slice().reverse().map((r) => el("tr", {},
    el("td", {}, when(r.time)), el("td", {}, r.actor), el("td", {}, r.action), el("td", {}, r.resource), el("td", {}, r.reason || ""), el("td", {}, r.comment || "")));
  page("Audit trail", table(["Time", "Actor", "Action", "Resource", "Reason", "Comment"], rows, "Audit records"),
    resp.nextPageToken ? el("a", { href: "#/audit?page=" + encodeURIComponent(resp.nextPageToken) }, "Older records") : null);
}

const FRAMEWORKS = [["all", "COMPLIANCE_FRAMEWORK_UNSPECIFIED", "every framework"], ["hipaa", "COMPLIANCE_FRAMEWORK_HIPAA", "HIPAA Security Rule"],
  ["hicp", "COMPLIANCE_FRAMEWORK_HICP", "HHS 405(d) HICP"], ["proposed-2025", "COMPLIANCE_FRAMEWORK_PROPOSED_2025", "2025 proposed rule (not in force)"]];

const REPORT_PAGE = 100; // devices per page of the compliance report's device table

// complianceDevices is one page of the report's per-device results, with
// a link to the next page of the same evaluation.
function complianceDevices(resp, name) {
  const r = resp.report || {};
  const devs = r.devices || [];
  const from = resp.deviceOffset || 0;
  const statusText = (s) => enumText(s, "CONTROL_STATUS_");
  const rows = devs.map((d) => {
    const results = d.results || [];
    const unmet = results.filter((x) => statusText(x.status) === "unmet").map((x) => x.controlId);
    const notEvidenced = results.filter((x) => statusText(x.status) === "not-evidenced").length;
    return el("tr", {},
      el("td", {}, el("a", { href: "#/device?mac=" + encodeURIComponent(d.deviceMac) }, d.deviceMac), d.hostname ? el("br") : null, d.hostname || null),
      el("td", {}, enumText(d["class"], "DEVICE_CLASS_")), el("td", {}, tier(d.tier)),
      el("td", {}, [d.vendor, d.model, d.version].filter(Boolean).join(" ")),
      el("td", {}, `${d.riskScore || 0} (${d.posture || "none"})`),
      el("td", {}, unmet.length ? unmet.join(", ") : "none"), el("td", {}, notEvidenced));
  });
  const next = new URLSearchParams({ framework: name });
  if (resp.nextPageToken) next.set("page", resp.nextPageToken);
  const list = devs.length ? table(["Device", "Class", "Tier", "Model", "Risk (posture)", "Controls unmet", "Not evidenced"], rows, "Devices of the report") : null;
  if (list) list.dataset.devices = "";
  return [
    el("h2", { id: "report-devices-heading" }, "Devices"),
    el("p", { id: "report-devices-range" }, devs.length ? `Devices ${from + 1}–${from + devs.length} of ${resp.deviceTotal || 0}` : "No device."),
    list,
    resp.nextPageToken ? el("a", { id: "report-devices-next", href: "#/compliance?" + next.toString() }, "Next devices") : null,
  ];
}

async function compliance(params) {
  const name = FRAMEWORKS.some((f) => f[0] === params.get("framework")) ? params.get("framework") : "all";
  const fw = FRAMEWORKS.find((f) => f[0] === name);
  const form = el("form", { class: "filters" },
    el("label", {}, "Framework", el("select", { name: "framework" },
      FRAMEWORKS.map((f) => el("option", { value: f[0], selected: f[0] === name }, f[2])))),
    el("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    location.hash = "#/compliance?framework=" + encodeURIComponent(new FormData(form).get("framework"));
  });
  const again = () => el("a", { id: "report-restart", href: "#/compliance?framework=" + encodeURIComponent(name) }, "the report's summary (a new evaluation)");
  if (params.get("page")) {
    // A later page of the device table: the devices of the evaluation the
    // summary was made from, however the state moved on since.
    let resp;
    try {
      resp = await rpc("ComplianceService", "GetReport", { framework: fw[1], pageSize: REPORT_PAGE, pageToken: params.get("page") });
    } catch (e) {
      if (e.code !== "aborted") throw e;
      page("Compliance report", form, el("p", { id: "report-expired", class: "error", role: "alert" },
        "The cluster no longer holds this report (a report is held for 10 minutes after its last page is read, or the leader changed). Go back to ", again(), "."));
      return;
    }
    const r = resp.report || {};
    page("Compliance report", form,
      el("p", {}, "The report generated ", when(r.generateTime), ` at Raft index ${r.raftIndex || 0}; back to `, again(), "."),
      ...complianceDevices(resp, name));
    return;
  }
  const resp = await rpc("ComplianceService", "GetReport", { framework: fw[1], pageSize: REPORT_PAGE });
  const r = resp.report || {};
  const plan = r.plan || {};
  const actions = plan.actions || [];
  const fig = (label, key, n) => el("div", { class: "card" }, el("div", { class: "n", "data-figure": key }, n), label);
  const statusText = (s) => enumText(s, "CONTROL_STATUS_");
  const controls = (r.controls || []).map((c) => el("tr", {},
    el("td", {}, (c.control && c.control.citation) || (c.control && c.control.id) || ""),
    el("td", {}, (c.control && c.control.title) || "", c.control && c.control.proposed ? " (proposed)" : ""),
    el("td", {}, el("span", { class: `badge control-${statusText(c.status)}` }, statusText(c.status))),
    el("td", {}, c.met || 0), el("td", {}, c.unmet || 0), el("td", {}, c.notEvidenced || 0),
    el("td", {}, c.detail || "")));
  const rows = actions.map((a) => el("tr", {},
    el("td", {}, a.rank || ""), el("td", {}, a.title || a.id), el("td", {}, enumText(a.kind, "REMEDIATION_KIND_")),
    el("td", {}, (a.deviceMacs || []).length), el("td", {}, a.effort || 0),
    el("td", {}, Math.round(a.expectedRiskDrop || 0))));
  page("Compliance report", form,
    el("p", {}, "Generated ", when(r.generateTime), ` at Raft index ${r.raftIndex || 0}`,
      r.bundleDigest ? ` with intelligence bundle ${r.bundleDigest.slice(0, 12)}` : " without an intelligence bundle", "."),
    el("div", { class: "cards", id: "compliance-summary" },
      fig("devices", "devices", (r.coverage && r.coverage.devices) || 0),
      fig("controls met", "controls-met", r.controlsMet || 0),
      fig("controls unmet", "controls-unmet", r.controlsUnmet || 0),
      fig("controls not evidenced", "controls-not-evidenced", r.controlsNotEvidenced || 0),
      fig("plan actions", "actions", actions.length),
      fig("campus risk", "campus-risk", Math.round(plan.campusRisk || 0))),
    el("p", {}, el("a", { id: "report-download", href: "api/compliance-report?framework=" + encodeURIComponent(name), download: "" },
      "Download the report (one self-contained HTML page, the same as medmesh compliance report --format html)")),
    el("h2", {}, "Remediation plan, first to do first"),
    rows.length ? table(["Rank", "Action", "Kind", "Devices", "Effort (points)", "Expected risk drop"], rows, "Remediation plan") : el("p", {}, "No action planned."),
    el("h2", {}, "Controls"),
    table(["Citation", "Control", "Status", "Devices met", "Devices unmet", "Devices not evidenced", "Detail"], controls, "Controls"),
    ...complianceDevices(resp, name));
}

// ---- campus map ----------------------------------------------------------

function tierCounts(s) {
  return [["life-critical", s.lifeCritical], ["clinical", s.clinical], ["non-clinical", s.nonClinical], ["unknown tier (treated as life-critical)", s.unknownTier]]
    .filter(([, n]) => n).map(([t, n]) => `${n} ${t}`).join(", ");
}

// segmentDevices fills a zone's list with its devices, a page at a time
// (ListSegmentDevices pages on the server), each with its peers.
async function segmentDevices(seg, list, more, token = "") {
  const r = await rpc("CampusService", "ListSegmentDevices", { segment: seg, pageSize: 50, pageToken: token });
  for (const d of r.devices || []) {
    const peers = (d.peers || []).map((p) => el("li", { "data-peer": p.peer },
      `${enumText(p.direction, "DIRECTION_") === "inbound" ? "from" : "to"} `,
      p.peerMac ? el("a", { href: "#/device?mac=" + encodeURIComponent(p.peerMac) }, p.peer) : p.peer,
      ` ${service(p)}`, p.flows ? `, ${p.flows} recent flows` : ", baseline only", p.reportedByPeer ? " (as the peer reports it)" : "",
      p.crosses ? el("strong", {}, ` crosses to ${segmentText(p.peerSegment)}`) : " (same zone)"));
    list.append(el("li", { "data-mac": d.mac },
      el("a", { href: "#/device?mac=" + encodeURIComponent(d.mac) }, d.hostname || d.mac), " ", tier(d.tier), " ",
      enumText(d.deviceClass, "DEVICE_CLASS_"), [d.vendor, d.model].filter(Boolean).length ? ` · ${[d.vendor, d.model].filter(Boolean).join(" ")}` : "",
      peers.length ? el("ul", { class: "peers", "aria-label": `Peers of ${d.mac}` }, peers) : el("span", { class: "muted" }, " · no peer known"),
      d.truncatedPeers ? el("span", { class: "muted" }, ` · ${d.truncatedPeers} more peers on its device page`) : ""));
  }
  more.replaceChildren();
  if (r.nextPageToken) {
    more.append(el("button", { type: "button", class: "secondary", onclick: () => guarded(() => segmentDevices(seg, list, more, r.nextPageToken)) },
      `More devices (${list.children.length} of ${r.totalSize} shown)`));
  }
}

async function campus(params) {
  const m = await rpc("CampusService", "GetCampusMap", {});
  const segs = m.segments || [];
  // Buildings -> floors -> zones, as nested disclosure lists: Tab moves
  // between them, Enter or Space opens one; a zone's devices load when
  // it is opened.
  const group = (arr, key) => { const g = new Map(); for (const x of arr) { const k = key(x); if (!g.has(k)) g.set(k, []); g.get(k).push(x); } return g; };
  const sum = (arr, f) => arr.reduce((n, x) => n + (x[f] || 0), 0);
  const counts = (arr) => ({ devices: sum(arr, "devices"), lifeCritical: sum(arr, "lifeCritical"), clinical: sum(arr, "clinical"), nonClinical: sum(arr, "nonClinical"), unknownTier: sum(arr, "unknownTier") });
  const want = { building: params.get("building") || "", floor: params.get("floor") || "", zone: params.get("zone") || "" };
  const buildings = group(segs, (s) => [s.segment.campus, s.segment.building].filter(Boolean).join(" / "));
  const opens = [];
  const tree = el("ul", { class: "tree", id: "campus-tree", "aria-label": "Buildings, floors and zones" },
    [...buildings].map(([b, bsegs]) => {
      const c = counts(bsegs);
      return el("li", {}, el("details", { open: true },
        el("summary", {}, b ? `Building ${b}` : "Campus (no building recorded)", ` — ${c.devices} devices: ${tierCounts(c)}`),
        el("ul", {}, [...group(bsegs, (s) => s.segment.floor || "")].map(([f, fsegs]) => {
          const fc = counts(fsegs);
          return el("li", { "data-floor": f }, el("details", { open: want.floor === f && want.zone !== "" ? true : undefined },
            el("summary", {}, f ? `Floor ${f}` : "No floor recorded", ` — ${fc.devices} devices: ${tierCounts(fc)}`),
            el("ul", {}, fsegs.map((s) => {
              const list = el("ul", { class: "devices", "aria-label": `Devices in ${segmentText(s.segment)}` });
              const more = el("div", {});
              const det = el("details", { "data-zone": s.segment.zone || "" },
                el("summary", {}, s.segment.zone ? `Zone ${s.segment.zone}` : "No zone recorded",
                  ` — ${s.devices} devices: ${tierCounts(s)}; ${s.crossings || 0} crossings`),
                list, more);
              let loaded = false;
              det.addEventListener("toggle", () => {
                if (!det.open || loaded) return;
                loaded = true;
                guarded(async () => { await segmentDevices(s.segment, list, more); det.dataset.loaded = "true"; });
              });
              if (want.floor === f && want.zone === (s.segment.zone || "") && want.building === (s.segment.building || "")) opens.push(det);
              return el("li", {}, det);
            }))));
        }))));
    }));
  const crossingRows = (m.crossings || []).map((c) => el("tr", { "data-from": segmentText(c.from), "data-to": segmentText(c.to) },
    el("td", {}, segmentText(c.from)), el("td", {}, segmentText(c.to)), el("td", {}, c.devicePairs || 0),
    el("td", {}, c.flows || 0), el("td", {}, (c.services || []).join(", ")), el("td", {}, (c.examples || []).join("; "))));
  page("Campus map",
    el("p", { id: "campus-summary" }, `${m.devices || 0} devices in ${segs.length} zones. Open a floor, then a zone, to list its devices and their peers. `,
      "Peers and crossings come from the sensors' frozen baselines and the recent flow summaries the coordinators keep; a flow count of 0 means the baseline allows it and no recent summary counted it."),
    el("div", { class: "cols" },
      section("campus-segments", "Floors and zones", tree),
      section("campus-crossings", "What crosses segments",
        el("p", {}, "From the side that opens the connection to the side that answers; \"outside the inventory\" is an address no single known device holds.",
          m.truncatedCrossings ? ` ${m.truncatedCrossings} smaller crossings not listed.` : ""),
        crossingRows.length ? table(["From", "To", "Device pairs", "Recent flows", "Services", "Examples"], crossingRows, "Traffic crossing segments")
          : el("p", {}, "Nothing crosses a segment in the baselines or recent flows."))));
  for (const det of opens) det.open = true;
}

const routes = { overview, inventory, device, campus, alerts, approvals, policies, compliance, audit };

async function route() {
  for (const stop of stopStreams) stop();
  stopStreams = [];
  if (!me) return;
  const [path, query] = (location.hash.slice(2) || "overview").split("?");
  const params = new URLSearchParams(query || "");
  const fn = routes[path] || overview;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === "#/" + path) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  status("loading…");
  const t0 = performance.now();
  await guarded(async () => {
    await fn(params);
    status("");
    window.medmeshLastRender = { path, ms: performance.now() - t0, at: performance.now() };
    window.medmeshRenders = (window.medmeshRenders || 0) + 1;
    document.body.dataset.ready = path;
  });
  $("#main").focus();
}

// ---- session -----------------------------------------------------------

function showLogin() {
  me = null;
  $("#nav").hidden = true;
  $("#logout").hidden = true;
  $("#who").textContent = "";
  $("#page").replaceChildren();
  $("#login").hidden = false;
  document.body.dataset.ready = "login";
  $("#login-name").focus();
  // A single sign-on that came back refused says why (a code, never
  // text from the provider).
  const sso = /^#sso-error=([a-z]+)$/.exec(location.hash);
  if (sso) {
    $("#login-error").textContent = ssoErrors[sso[1]] || "Single sign-on failed.";
    history.replaceState(null, "", location.pathname);
  }
}

const ssoErrors = {
  refused: "Single sign-on refused: none of your groups at the identity provider is mapped to a medmesh role. Ask the security team.",
  denied: "Single sign-on was cancelled or refused by the identity provider.",
  failed: "Single sign-on failed: the answer of the identity provider could not be verified. Try again.",
  unavailable: "Single sign-on is unavailable: the identity provider or the cluster cannot be reached now. Try again, or log in with a console account.",
};

function loggedIn(session) {
  me = session;
  $("#login").hidden = true;
  $("#nav").hidden = false;
  $("#logout").hidden = false;
  $("#who").textContent = `Logged in as ${me.identity} · times in ${zone}`;
  route();
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#login-error").textContent = "";
  const r = await fetch("api/login", {
    method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name: $("#login-name").value, password: $("#login-password").value }),
  });
  $("#login-password").value = "";
  const data = await r.json().catch(() => ({}));
  if (!r.ok) { $("#login-error").textContent = data.error || `login failed (${r.status})`; return; }
  loggedIn(data);
});

$("#logout").addEventListener("click", async () => {
  await fetch("api/logout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": me ? me.csrf : "" } });
  for (const stop of stopStreams) stop();
  showLogin();
});

window.addEventListener("hashchange", route);

(async () => {
  const r = await fetch("api/session", { credentials: "same-origin" });
  const s = r.ok ? await r.json() : {};
  if (s.sso) { $("#sso-name").textContent = s.sso; $("#sso").hidden = false; }
  if (s.identity) loggedIn(s); else showLogin();
})();
