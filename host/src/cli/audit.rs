//! `runbook audit`: for security reviewers. `audit RUNBOOK` shows, for each
//! step and each `[notify]` target, the plugin's digest, the interfaces it
//! imports (read from the component), what it declares it needs and what
//! the runbook grants, with every mismatch; `audit --run RUN` shows what each step touched;
//! `audit verify RUN` checks the audit log's hash chain, and every
//! signature the run keeps against the runbook's allowed_signers.

use super::{Cli, Failure, exit};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::engine::preflight;
use crate::plugin::LoadedPlugin;
use crate::runbook::{self, Action, Bindings, bind::bind};
use crate::{audit, journal, state};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

/// How the report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// For people, on a terminal.
    #[default]
    Text,
    /// For tools.
    Json,
    /// For a review ticket.
    Markdown,
}

/// `runbook audit RUNBOOK`, `runbook audit --run RUN`, `runbook audit verify RUN`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,

    /// The runbook to review.
    file: Option<PathBuf>,

    /// Review one environment's grants [default: every environment].
    #[arg(short, long, value_name = "NAME")]
    env: Option<String>,

    /// Show what each step of this run actually touched.
    #[arg(long, value_name = "RUN", conflicts_with = "file")]
    run: Option<String>,

    /// `text`, `json` or `markdown`.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    output: Format,

    /// The state folder, if the run is not found otherwise.
    /// A shared backend's `postgres://` URL works too (`$RUNBOOK_STATE`).
    #[arg(
        long,
        visible_alias = "state",
        value_name = "DIR|URL",
        env = "RUNBOOK_STATE"
    )]
    state_dir: Option<PathBuf>,
}

/// `runbook audit verify RUN`
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check that a run's audit log was not edited, cut or reordered, and
    /// that every signature its journal and deployment record keep (the
    /// operator's, the approvers') still verifies against the runbook's
    /// allowed_signers.
    Verify {
        /// The run's id.
        run: String,
        /// The state folder, if the run is not found otherwise.
        /// A shared backend's `postgres://` URL works too (`$RUNBOOK_STATE`).
        #[arg(
            long,
            visible_alias = "state",
            value_name = "DIR|URL",
            env = "RUNBOOK_STATE"
        )]
        state_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Serialize)]
struct StepReview {
    step: String,
    environment: Option<String>,
    plugin: String,
    version: String,
    sha256: String,
    imports: Vec<String>,
    declares: Vec<String>,
    optional: Vec<String>,
    embedded: Option<Vec<String>>,
    grants: Grants,
    findings: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Grants {
    http: Vec<String>,
    secrets: Vec<String>,
    fs_read: Vec<String>,
    kube: Option<String>,
    aws: Option<String>,
    command: Vec<String>,
}

fn invalid(message: String, hint: &str) -> Failure {
    Failure::Invalid(Diagnostics(vec![Diagnostic::new(message).hint(hint)]))
}

/// Runs the command.
pub async fn run(cli: &Cli, args: &AuditArgs) -> Result<u8, Failure> {
    match (&args.command, &args.file, &args.run) {
        (Some(AuditCommand::Verify { run, state_dir }), _, _) => {
            verify(run, state_dir.as_deref().or(args.state_dir.as_deref()))
        }
        (None, _, Some(run)) => touched(run, args),
        (None, Some(file), None) => review(cli, file, args).await,
        (None, None, None) => Err(invalid(
            "say what to audit".into(),
            "`runbook audit RUNBOOK`, `runbook audit --run RUN` or `runbook audit verify RUN`",
        )),
    }
}

fn verify(run: &str, state_dir: Option<&std::path::Path>) -> Result<u8, Failure> {
    let dir = state::find_run(run, state_dir)
        .map_err(|error| invalid(error.to_string(), "pass `--state-dir DIR`"))?;
    let record = journal::read(&state::journal_path(&dir))
        .map_err(|error| Failure::Internal(error.into()))?;
    let chain = match audit::verify(&audit::path(&dir), run, &record.audit) {
        Ok(count) => {
            outln!(
                "✓ the audit log of run {run} is intact: {count} records, each chained to the one before"
            )?;
            if !record.audit.closed {
                outln!(
                    "  note: the run's last process has not recorded its final head (still running, or it died): records cut from its end could not be noticed"
                )?;
            }
            true
        }
        Err(tampered) => {
            eprintln!("✗ the audit log of run {run} was tampered with: {tampered}");
            false
        }
    };
    let signatures = verify_signatures(run, &dir, &record)?;
    Ok(if chain && signatures {
        exit::SUCCESS
    } else {
        exit::STEP_FAILED
    })
}

/// A signature the run's journal or deployment record keeps.
struct Kept {
    /// Where: `journal line N` or `deployment record`.
    place: String,
    /// `operator` or `approver`.
    role: crate::signature::Role,
    /// The fingerprint it must be for.
    plan_hash: String,
    /// Whether it is the rollback's (asked after the end).
    of_rollback: bool,
    /// The signature.
    signature: crate::events::SignatureRecord,
}

/// Checks every signature the run's journal and its deployment record
/// keep against the allowed_signers file the runbook names now: each must
/// verify (key listed for its principal, namespace, the key valid when it
/// was signed), for this run, in its role, for the fingerprint recorded
/// beside it. Says which fail; `false` when any does.
fn verify_signatures(
    run: &str,
    dir: &std::path::Path,
    record: &journal::RunRecord,
) -> Result<bool, Failure> {
    let journal = state::journal_path(dir);
    let mut kept = Vec::new();
    let mut started_hash = None;
    let mut line = 0;
    let rollback_hash = record
        .rollback_request
        .as_ref()
        .map(|asked| asked.plan_hash.clone());
    journal::replay(&journal, |event| {
        line += 1;
        let text = |key: &str| {
            event
                .get(key)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let role = match text("event").as_str() {
            "run_started" => {
                started_hash = event
                    .get("plan_hash")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned);
                None
            }
            "operator_signed" => Some(crate::signature::Role::Operator),
            "approved" => Some(crate::signature::Role::Approver),
            _ => None,
        };
        if let Some(role) = role
            && let Some(signature) = event
                .get("signature")
                .and_then(|signature| serde_json::from_value(signature.clone()).ok())
        {
            let plan_hash = text("plan_hash");
            kept.push(Kept {
                place: format!("journal line {line}"),
                role,
                of_rollback: rollback_hash.as_deref() == Some(plan_hash.as_str()),
                plan_hash,
                signature,
            });
        }
        std::ops::ControlFlow::Continue(())
    })
    .map_err(|error| Failure::Internal(error.into()))?;
    // The deployment record keeps copies: they must hold as well, for the
    // fingerprint the run (or its rollback) had.
    if let Some(state_dir) = dir.parent().and_then(std::path::Path::parent)
        && let Ok(text) =
            std::fs::read_to_string(state_dir.join("deployments").join(format!("{run}.json")))
        && let Ok(deployment) = serde_json::from_str::<state::DeploymentRecord>(&text)
    {
        let mut keep = |signatures: &[crate::events::SignatureRecord],
                        plan_hash: Option<&String>,
                        of_rollback: bool| {
            for signature in signatures {
                let role = if signature.role == "operator" {
                    crate::signature::Role::Operator
                } else {
                    crate::signature::Role::Approver
                };
                kept.push(Kept {
                    place: "deployment record".to_owned(),
                    role,
                    plan_hash: plan_hash.cloned().unwrap_or_default(),
                    of_rollback,
                    signature: signature.clone(),
                });
            }
        };
        keep(&deployment.signatures, started_hash.as_ref(), false);
        if let Some(rollback) = &deployment.rollback {
            keep(&rollback.signatures, rollback_hash.as_ref(), true);
        }
    }
    let unsigned: Vec<&str> = record
        .approvals
        .iter()
        .filter(|approval| approval.signature.is_none())
        .map(|approval| approval.by.as_str())
        .collect();
    if !unsigned.is_empty() {
        outln!(
            "  note: unsigned approvals (self-declared with `--as`): {}",
            unsigned.join(", ")
        )?;
    }
    if kept.is_empty() {
        return Ok(true);
    }
    let runbook = match runbook::load(std::path::Path::new(&record.file)) {
        Ok(runbook) => runbook,
        Err(error) => {
            eprintln!(
                "✗ the {} signatures of run {run} cannot be checked: its runbook {} does not load: {error}",
                kept.len(),
                record.file
            );
            return Ok(false);
        }
    };
    let environment = record
        .environment
        .as_ref()
        .and_then(|name| runbook.environments.get(name));
    let mut failed = 0;
    let mut held = Vec::new();
    for kept in &kept {
        let emergency = if kept.of_rollback {
            record
                .rollback_request
                .as_ref()
                .is_some_and(|asked| asked.emergency.is_some())
        } else {
            record.emergency.is_some()
        };
        let signers = environment
            .and_then(|environment| crate::gates::rule(environment, emergency))
            .and_then(|rule| rule.signers.as_ref());
        let who = format!(
            "the {} signature of {} ({})",
            kept.role.as_str(),
            kept.signature.principal,
            kept.place
        );
        let Some(signers) = signers else {
            failed += 1;
            eprintln!(
                "✗ {who} cannot be checked: the environment's approvals name no allowed_signers file now"
            );
            continue;
        };
        let expected = crate::gates::Expected {
            run_id: &record.run_id,
            fingerprint: &kept.plan_hash,
            parts: None,
            at: None,
        };
        match crate::gates::check_signature(&signers.allowed, &kept.signature, kept.role, &expected)
        {
            Ok(signed) => held.push(format!("{} {}", kept.role.as_str(), signed.principal)),
            Err(why) => {
                failed += 1;
                eprintln!("✗ {who} does not hold against {}: {why}", signers.written);
            }
        }
    }
    if failed == 0 {
        outln!(
            "✓ {} signatures hold against the runbook's allowed_signers: {}",
            held.len(),
            held.join(", ")
        )?;
    }
    Ok(failed == 0)
}

fn touched(run: &str, args: &AuditArgs) -> Result<u8, Failure> {
    let dir = state::find_run(run, args.state_dir.as_deref())
        .map_err(|error| invalid(error.to_string(), "pass `--state-dir DIR`"))?;
    let records = audit::read(&audit::path(&dir));
    match args.output {
        Format::Json => super::print_json(&records)?,
        Format::Text | Format::Markdown => {
            let markdown = args.output == Format::Markdown;
            if markdown {
                outln!(
                    "# What run {run} touched\n\n| step | plugin | capability | request | decision | grant | detail |\n|---|---|---|---|---|---|---|"
                )?;
            } else {
                outln!(
                    "What run {run} touched ({} audited actions):",
                    records.len()
                )?;
            }
            let mut last_step = None;
            for record in &records {
                let step = record.step.clone().unwrap_or_else(|| "(run)".into());
                let digest = record
                    .plugin_digest
                    .as_deref()
                    .map(|digest| &digest[..12.min(digest.len())])
                    .unwrap_or("-");
                let decision = match record.decision {
                    crate::events::Decision::Allowed => "allowed",
                    crate::events::Decision::Denied => "DENIED",
                    crate::events::Decision::HeldBack => "held back",
                };
                if markdown {
                    outln!(
                        "| {step} | `{digest}` | {} | `{}` | {decision} | {} | {} |",
                        record.capability,
                        record.request,
                        record.grant.clone().unwrap_or_default(),
                        record.detail.clone().unwrap_or_default()
                    )?;
                    continue;
                }
                if last_step.as_ref() != Some(&step) {
                    outln!("\n{step} (plugin {digest})")?;
                    last_step = Some(step);
                }
                outln!(
                    "  {decision:<7} {:<8} {}{}{}",
                    record.capability,
                    record.request,
                    record
                        .grant
                        .as_ref()
                        .map(|grant| format!("  [grant {grant}]"))
                        .unwrap_or_default(),
                    record
                        .detail
                        .as_ref()
                        .map(|detail| format!("  → {detail}"))
                        .unwrap_or_default()
                )?;
            }
        }
    }
    Ok(exit::SUCCESS)
}

async fn review(cli: &Cli, file: &std::path::Path, args: &AuditArgs) -> Result<u8, Failure> {
    let runbook = Arc::new(runbook::load(file)?);
    let environments: Vec<Option<String>> = match &args.env {
        Some(name) => vec![Some(name.clone())],
        None if runbook.environments.is_empty() => vec![None],
        None => runbook.environments.keys().cloned().map(Some).collect(),
    };
    let runtime = super::plugin_runtime(cli)?;
    let mut reviews = Vec::new();
    for environment in environments {
        let plan = bind(
            Arc::clone(&runbook),
            Bindings {
                environment: environment.clone(),
                sets: Vec::new(),
                operator: "audit".into(),
                run_id: "audit".into(),
                lenient: true,
            },
        )?;
        let plugins = preflight::load_plugins(&runtime, &plan).await?;
        for planned in &plan.steps {
            let step = plan.step(planned);
            let Action::Plugin(name) = &step.action else {
                continue;
            };
            let plugin = &plugins[name];
            let asks = preflight::asks_of(&plan, plugin, &step.with, planned.item.as_ref());
            let review = review_of(&planned.id.0, &environment, plugin, &asks, &planned.grants);
            reviews.push(review);
        }
        // A `[notify]` target calls its plugin as a step does: reviewed as
        // one, under the id its calls are audited under (`notify.0`).
        for planned in &plan.targets {
            let target = plan.target(planned);
            let plugin = &plugins[&target.plugin];
            let asks = preflight::asks_of(&plan, plugin, &target.with, None);
            let review = review_of(&planned.id.0, &environment, plugin, &asks, &planned.grants);
            reviews.push(review);
        }
    }
    match args.output {
        Format::Json => super::print_json(&reviews)?,
        Format::Markdown => print_markdown(&runbook.name, &reviews)?,
        Format::Text => print_text(&runbook.name, &reviews)?,
    }
    Ok(exit::SUCCESS)
}

/// The review of `step` (a step's id, or a `[notify]` target's) in
/// `environment`: its plugin's digest, what it declares and imports, its
/// grants, and where they disagree with what it `asks` with the step's
/// parameters.
fn review_of(
    step: &str,
    environment: &Option<String>,
    plugin: &LoadedPlugin,
    asks: &crate::capability::Asks<'_>,
    grants: &crate::grant::StepGrants,
) -> StepReview {
    StepReview {
        step: step.to_owned(),
        environment: environment.clone(),
        plugin: plugin.descriptor.name.clone(),
        version: plugin.descriptor.version.clone(),
        sha256: plugin.digest.clone(),
        imports: plugin.imports.clone(),
        declares: plugin
            .descriptor
            .capabilities
            .iter()
            .map(|capability| capability.name().to_owned())
            .collect(),
        optional: plugin
            .descriptor
            .optional_capabilities
            .iter()
            .map(|capability| capability.name().to_owned())
            .collect(),
        findings: findings(plugin, asks, grants),
        embedded: plugin.embedded_capabilities.clone(),
        grants: Grants {
            http: grants.http_texts(),
            secrets: grants.secrets.clone(),
            fs_read: grants.fs_texts(),
            kube: grants.kube.as_ref().map(|grant| grant.describe()),
            aws: grants.aws.as_ref().map(|grant| grant.describe()),
            command: grants
                .command
                .iter()
                .map(|grant| grant.describe())
                .collect(),
        },
    }
}

/// Where what a plugin declares, imports, `asks` with the step's
/// parameters and is granted disagree: the need-versus-grant rules
/// `validate` and `exec` apply, and whether the component was built to
/// say what it needs.
fn findings(
    plugin: &LoadedPlugin,
    asks: &crate::capability::Asks<'_>,
    grants: &crate::grant::StepGrants,
) -> Vec<String> {
    let mut found: Vec<String> = crate::capability::review(asks, grants)
        .into_iter()
        .map(|finding| match finding.mismatch {
            crate::capability::Mismatch::NeedsUngranted => {
                format!("{}: `validate` and `exec` refuse it", finding.message)
            }
            _ => finding.message,
        })
        .collect();
    if plugin.embedded_capabilities.is_none() {
        found.push(
            "not sealed: no `runbook:capabilities` section, so what it needs is known only by running `describe`; seal it with `runbook plugin seal`"
                .into(),
        );
    }
    found
}

fn print_text(name: &str, reviews: &[StepReview]) -> Result<(), Failure> {
    outln!("Audit of runbook `{name}`: {} step reviews", reviews.len())?;
    for review in reviews {
        outln!()?;
        let environment = review
            .environment
            .as_ref()
            .map(|name| format!(" [env {name}]"))
            .unwrap_or_default();
        outln!(
            "{}{environment}: {} {}",
            review.step,
            review.plugin,
            review.version
        )?;
        outln!("  sha256    {}", review.sha256)?;
        outln!(
            "  declares  {}",
            if review.declares.is_empty() {
                "nothing".into()
            } else {
                review.declares.join(", ")
            }
        )?;
        if !review.optional.is_empty() {
            outln!(
                "  optional  {} (runs without their grants)",
                review.optional.join(", ")
            )?;
        }
        if let Some(embedded) = &review.embedded {
            outln!("  embedded  {} (written at build time)", list(embedded))?;
        }
        outln!(
            "  grants    http: {}; secrets: {}; read: {}",
            list(&review.grants.http),
            list(&review.grants.secrets),
            list(&review.grants.fs_read)
        )?;
        if let Some(kube) = &review.grants.kube {
            outln!("            kube: {kube}")?;
        }
        if let Some(aws) = &review.grants.aws {
            outln!("            aws: {aws}")?;
        }
        for command in &review.grants.command {
            outln!("            command: {command}")?;
        }
        let capability_imports: Vec<&String> = review
            .imports
            .iter()
            .filter(|import| import.starts_with("runbook:plugin/"))
            .collect();
        outln!(
            "  imports   {}",
            capability_imports
                .iter()
                .map(|import| import.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        for finding in &review.findings {
            outln!("  ⚠ {finding}")?;
        }
    }
    Ok(())
}

fn print_markdown(name: &str, reviews: &[StepReview]) -> Result<(), Failure> {
    outln!("# Audit of runbook `{name}`\n")?;
    outln!(
        "| step | environment | plugin | sha256 | declares | grants http | grants secrets | grants kube | grants aws | grants command | imports | findings |"
    )?;
    outln!("|---|---|---|---|---|---|---|---|---|---|---|---|")?;
    for review in reviews {
        outln!(
            "| {} | {} | {} {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
            review.step,
            review.environment.clone().unwrap_or_default(),
            review.plugin,
            review.version,
            review.sha256,
            list(&review.declares),
            list(&review.grants.http),
            list(&review.grants.secrets),
            review.grants.kube.as_deref().unwrap_or("none"),
            review.grants.aws.as_deref().unwrap_or("none"),
            if review.grants.command.is_empty() {
                "none".to_owned()
            } else {
                review
                    .grants
                    .command
                    .iter()
                    .map(|command| format!("`{}`", command.replace('|', "\\|")))
                    .collect::<Vec<_>>()
                    .join("<br>")
            },
            review
                .imports
                .iter()
                .filter(|import| import.starts_with("runbook:plugin/"))
                .map(|import| format!("`{import}`"))
                .collect::<Vec<_>>()
                .join("<br>"),
            if review.findings.is_empty() {
                "none".into()
            } else {
                review.findings.join("<br>")
            }
        )?;
    }
    Ok(())
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
