package api

import (
	"maps"

	"github.com/medmesh/medmesh/internal/authz"
	"github.com/medmesh/medmesh/internal/grpcx"
	"github.com/medmesh/medmesh/internal/pki"
	medmeshv1 "github.com/medmesh/medmesh/proto/medmesh/v1"
)

// Who may do what, by role. Approvers can do all an operator can; operators
// all a viewer can. Handlers add what a table cannot say: a sensor reports
// only as itself, an enforcer reports only its own status, an approver
// never approves a decision its own identity caused, and only approvers
// activate enforce mode.
var (
	readers   = []pki.Role{pki.RoleViewer, pki.RoleOperator, pki.RoleApprover}
	operators = []pki.Role{pki.RoleOperator, pki.RoleApprover}
	approvers = []pki.Role{pki.RoleApprover}
)

// AuthzTable is the coordinator's authorization table: every RPC the API
// serves and the roles that may call it. Anything not in it is denied; the
// server refuses to start if a registered method has no row, and the
// authorization matrix test walks this same table.
func AuthzTable() authz.Table {
	t := authz.Table{
		// Cluster membership: coordinators join; removing or moving the
		// leader is an approver's act, audited.
		medmeshv1.ClusterService_GetClusterStatus_FullMethodName:   append([]pki.Role{pki.RoleCoordinator, pki.RoleSensor, pki.RoleEnforcer}, readers...),
		medmeshv1.ClusterService_JoinCluster_FullMethodName:        {pki.RoleCoordinator},
		medmeshv1.ClusterService_RemoveMember_FullMethodName:       {pki.RoleCoordinator, pki.RoleApprover},
		medmeshv1.ClusterService_TransferLeadership_FullMethodName: {pki.RoleCoordinator, pki.RoleApprover},
		medmeshv1.ClusterService_ReportMemberStatus_FullMethodName: {pki.RoleSensor, pki.RoleEnforcer},
		// A backup archive holds the whole state and the audit trail:
		// approvers only (a follower forwards the call to the leader).
		medmeshv1.ClusterService_SaveSnapshot_FullMethodName: {pki.RoleCoordinator, pki.RoleApprover},

		medmeshv1.InventoryService_ListDevices_FullMethodName:  readers,
		medmeshv1.InventoryService_GetDevice_FullMethodName:    readers,
		medmeshv1.InventoryService_WatchDevices_FullMethodName: readers,
		medmeshv1.InventoryService_UpdateDevice_FullMethodName: operators,
		// An asset import may raise tiers and fills asset records
		// (audited); its dry run is the same call.
		medmeshv1.InventoryService_ImportDevices_FullMethodName: operators,

		medmeshv1.PolicyService_PutPolicy_FullMethodName:        operators,
		medmeshv1.PolicyService_GetPolicy_FullMethodName:        readers,
		medmeshv1.PolicyService_ListPolicies_FullMethodName:     readers,
		medmeshv1.PolicyService_DeletePolicy_FullMethodName:     operators,
		medmeshv1.PolicyService_ActivatePolicy_FullMethodName:   operators, // enforce mode: approvers (handler)
		medmeshv1.PolicyService_GeneratePolicy_FullMethodName:   operators,
		medmeshv1.PolicyService_SimulatePolicy_FullMethodName:   operators,
		medmeshv1.PolicyService_ExportPolicyMud_FullMethodName:  readers,
		medmeshv1.PolicyService_ImportPolicyMud_FullMethodName:  operators,
		medmeshv1.PolicyService_ListAuditRecords_FullMethodName: readers,

		// Enforcers follow the log with WatchDecisions only: every entry
		// is self-contained, so they never list decisions back.
		medmeshv1.DecisionService_ListDecisions_FullMethodName:   readers,
		medmeshv1.DecisionService_ApproveDecision_FullMethodName: approvers,
		medmeshv1.DecisionService_RejectDecision_FullMethodName:  approvers,
		medmeshv1.DecisionService_WatchDecisions_FullMethodName:  append([]pki.Role{pki.RoleEnforcer}, readers...),

		medmeshv1.AlertService_ListAlerts_FullMethodName:       readers,
		medmeshv1.AlertService_GetAlert_FullMethodName:         readers,
		medmeshv1.AlertService_AcknowledgeAlert_FullMethodName: operators,
		medmeshv1.AlertService_WatchAlerts_FullMethodName:      readers,

		// Incidents are derived from alerts inside the FSM: read-only, read
		// by whoever may read alerts.
		medmeshv1.IncidentService_ListIncidents_FullMethodName:  readers,
		medmeshv1.IncidentService_GetIncident_FullMethodName:    readers,
		medmeshv1.IncidentService_WatchIncidents_FullMethodName: readers,

		// Response rules decide what medmesh blocks on its own: changing
		// them is a safety matter, for approvers only (audited).
		medmeshv1.RuleService_ListRules_FullMethodName:  readers,
		medmeshv1.RuleService_PutRule_FullMethodName:    approvers,
		medmeshv1.RuleService_DeleteRule_FullMethodName: approvers,

		// Risk posture: importing a bundle or an SBOM changes what every
		// device is assessed against (audited); reading is a viewer's.
		// FetchBlob passes bundles and SBOMs between coordinators only.
		medmeshv1.RiskService_ImportBundle_FullMethodName:  operators,
		medmeshv1.RiskService_ImportSBOM_FullMethodName:    operators,
		medmeshv1.RiskService_IntelStatus_FullMethodName:   readers,
		medmeshv1.RiskService_ListFindings_FullMethodName:  readers,
		medmeshv1.RiskService_GetPosture_FullMethodName:    readers,
		medmeshv1.RiskService_Top_FullMethodName:           readers,
		medmeshv1.RiskService_WatchFindings_FullMethodName: readers,
		medmeshv1.RiskService_FetchBlob_FullMethodName:     {pki.RoleCoordinator},

		// Compliance: reading reports, exceptions and the trend is a
		// viewer's. Accepting or revoking a risk exception takes work off
		// (or puts it back on) the plan an auditor reads: approvers only,
		// audited with owner, reason and expiry.
		medmeshv1.ComplianceService_GetReport_FullMethodName:       readers,
		medmeshv1.ComplianceService_ListExceptions_FullMethodName:  readers,
		medmeshv1.ComplianceService_GetTrend_FullMethodName:        readers,
		medmeshv1.ComplianceService_AcceptException_FullMethodName: approvers,
		medmeshv1.ComplianceService_RevokeException_FullMethodName: approvers,
		// An MDS2 is vendor evidence, like an SBOM: operators import it
		// (audited).
		medmeshv1.ComplianceService_ImportMDS2_FullMethodName: operators,
		medmeshv1.ComplianceService_ListMDS2_FullMethodName:   readers,
		// Outbound sinks send alerts and the audit trail off the cluster:
		// adding or changing one is an approver's act (audited), like a
		// response rule. A webhook URL may carry a token in its path, so
		// sinks are shown to operators and approvers, not viewers; an
		// operator may send a test event to a configured sink.
		medmeshv1.SinkService_ListSinks_FullMethodName:     operators,
		medmeshv1.SinkService_PutSink_FullMethodName:       approvers,
		medmeshv1.SinkService_DeleteSink_FullMethodName:    approvers,
		medmeshv1.SinkService_TestSink_FullMethodName:      operators,
		medmeshv1.SinkService_GetSinkStatus_FullMethodName: operators,
		// Console accounts grant roles, approver included: managing them
		// is an approver's act (audited), and so is reading them (names and
		// lock-outs are for who may act on them). Authenticate,
		// EndSession and OpenExternalSession (a single sign-on the web
		// listener verified) are the web listener's, which every
		// coordinator runs and which forwards them to the leader:
		// coordinators only.
		medmeshv1.AccountService_ListAccounts_FullMethodName:        approvers,
		medmeshv1.AccountService_PutAccount_FullMethodName:          approvers,
		medmeshv1.AccountService_DeleteAccount_FullMethodName:       approvers,
		medmeshv1.AccountService_Authenticate_FullMethodName:        {pki.RoleCoordinator},
		medmeshv1.AccountService_EndSession_FullMethodName:          {pki.RoleCoordinator},
		medmeshv1.AccountService_OpenExternalSession_FullMethodName: {pki.RoleCoordinator},

		medmeshv1.SensorService_Report_FullMethodName: {pki.RoleSensor},
		// A baseline is read data: people may read it too (the lab's
		// scenario waits for a device's baseline to freeze).
		medmeshv1.SensorService_GetBaseline_FullMethodName: append([]pki.Role{pki.RoleSensor}, readers...),

		// The campus map and a device's traffic are derived read-only from
		// devices, baselines and flow summaries (no payload): readers.
		medmeshv1.CampusService_GetCampusMap_FullMethodName:       readers,
		medmeshv1.CampusService_ListSegmentDevices_FullMethodName: readers,
		medmeshv1.CampusService_GetDeviceTraffic_FullMethodName:   readers,
	}
	maps.Copy(t, grpcx.BuiltinMethods())
	return t
}
