//! `runbook approve RUN --key KEY` (or `--as NAME`, unsigned, where the
//! environment takes that) and `runbook confirm RUN STEP --as NAME`: the
//! people side of a run, appended to its journal.

use super::{Cli, Failure, exit};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::events::{EventKind, Status};
use crate::journal;
use crate::signature::Role;
use crate::state;
use std::path::PathBuf;

/// `runbook approve RUN --key KEY` or `runbook approve RUN --as NAME`
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The run's id.
    run: String,
    /// Who approves. Where the environment takes only signed approvals,
    /// the key says who: `--as` then only picks among the principals its
    /// line allows, and is refused when it disagrees with it.
    #[arg(long = "as", value_name = "NAME")]
    name: Option<String>,
    /// The approver's SSH key, where the environment's approvals name an
    /// `allowed_signers` file: a private key file, or a public key whose
    /// private half is in ssh-agent. `ssh-keygen -Y sign` signs.
    #[arg(long, value_name = "KEY", env = "RUNBOOK_SIGNING_KEY")]
    key: Option<PathBuf>,
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

/// `runbook confirm RUN STEP --as NAME`
#[derive(Debug, clap::Args)]
pub struct ConfirmArgs {
    /// The run's id.
    run: String,
    /// The manual step.
    step: String,
    /// Who confirms.
    #[arg(long = "as", value_name = "NAME")]
    name: String,
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

fn refuse(message: String, hint: impl Into<String>) -> Failure {
    Failure::Invalid(Diagnostics(vec![Diagnostic::new(message).hint(hint)]))
}

/// Records an approval of the run's current plan: signed, where its
/// environment's approvals name an `allowed_signers` file, else as the
/// name `--as` gives (shown as unsigned everywhere).
pub fn approve(_cli: &Cli, args: &ApproveArgs) -> Result<u8, Failure> {
    let dir = state::find_run(&args.run, args.state_dir.as_deref())
        .map_err(|error| refuse(error.to_string(), "pass `--state-dir DIR`"))?;
    let path = state::journal_path(&dir);
    let record = journal::read(&path).map_err(|error| Failure::Internal(error.into()))?;
    let runbook = crate::runbook::load(std::path::Path::new(&record.file))?;
    // A rollback asked after the run ended is approved as asked: its own
    // emergency or not, and its own fingerprint (the journal's latest).
    let emergency = record.approving_as_emergency();
    let rule = record
        .environment
        .as_ref()
        .and_then(|name| runbook.environments.get(name))
        .and_then(|environment| crate::gates::rule(environment, emergency));
    let Some(rule) = rule else {
        return Err(refuse(
            format!("run {} needs no approvals", args.run),
            "its environment has no `approvals`",
        ));
    };
    let Some(plan_hash) = record.plan_hash.clone() else {
        return Err(refuse(
            format!("run {} has no plan fingerprint", args.run),
            "start a new run",
        ));
    };
    let (by, signature) = match &rule.signers {
        Some(signers) => {
            let signature = signed(args, &record, rule, signers, &plan_hash, emergency)?;
            (signature.principal.clone(), Some(signature))
        }
        None => (unsigned(args, &record, rule, &plan_hash, emergency)?, None),
    };
    let how = match &signature {
        Some(signature) => format!("signed with {}", signature.key),
        None => "unsigned".to_owned(),
    };
    state::append_event(
        &path,
        None,
        EventKind::Approved {
            by: by.clone(),
            plan_hash: plan_hash.clone(),
            signature,
        },
        false,
    )
    .map_err(|error| Failure::Internal(error.into()))?;
    outln!(
        "✓ {by} approved run {} (plan {}, {how}); `runbook resume {}` continues it once enough approvals are in",
        args.run,
        &plan_hash[..12.min(plan_hash.len())],
        args.run
    )?;
    Ok(exit::SUCCESS)
}

/// An unsigned approval by `--as NAME`: a name among the approvers, not
/// the operator's, not given twice.
fn unsigned(
    args: &ApproveArgs,
    record: &journal::RunRecord,
    rule: &crate::runbook::Approvals,
    plan_hash: &str,
    emergency: bool,
) -> Result<String, Failure> {
    let Some(name) = args.name.clone() else {
        return Err(refuse(
            format!("say who approves run {}", args.run),
            "`runbook approve RUN --as NAME` (its environment takes unsigned approvals, which are shown as such)",
        ));
    };
    if record.operator == name {
        return Err(refuse(
            format!("{name} started run {} and cannot approve it", args.run),
            "another approver of the environment must approve",
        ));
    }
    if !rule.from.contains(&name) {
        let which = if emergency {
            "an emergency approver"
        } else {
            "an approver"
        };
        return Err(refuse(
            format!("{name} is not {which} of this environment"),
            format!("approvers: {}", rule.from.join(", ")),
        ));
    }
    if record
        .approvals
        .iter()
        .any(|approval| approval.by == name && approval.plan_hash == plan_hash)
    {
        return Err(refuse(
            format!("{name} already approved run {}", args.run),
            "approvals need distinct people",
        ));
    }
    Ok(name)
}

/// A signed approval: the run's operator signature holds, the key is in
/// the environment's allowed_signers and gives one of its approvers, who
/// is neither the operator (by key or principal) nor counted already; then
/// the payload is signed with `ssh-keygen -Y sign` and checked.
fn signed(
    args: &ApproveArgs,
    record: &journal::RunRecord,
    rule: &crate::runbook::Approvals,
    signers: &crate::runbook::Signers,
    plan_hash: &str,
    emergency: bool,
) -> Result<crate::events::SignatureRecord, Failure> {
    let environment = record.environment.as_deref().unwrap_or_default();
    let Some(key) = &args.key else {
        return Err(refuse(
            format!("`{environment}` takes only signed approvals: no key was given"),
            format!(
                "`runbook approve {} --key ~/.ssh/id_ed25519` (or set RUNBOOK_SIGNING_KEY) with your key in {}",
                args.run, signers.written
            ),
        ));
    };
    // The operator signed the plan when the run started (or its rollback
    // was asked): what the approver signs is that plan, and the operator's
    // key and principal may not approve it.
    let Some(operator_signature) = &record.operator_signature else {
        return Err(refuse(
            format!(
                "run {} has no operator signature: it cannot take signed approvals",
                args.run
            ),
            "start a new run with `runbook exec --key KEY`",
        ));
    };
    let now = jiff::Timestamp::now();
    let expected = crate::gates::Expected {
        run_id: &record.run_id,
        fingerprint: plan_hash,
        parts: None,
        at: Some(now),
    };
    let operator = crate::gates::check_signature(
        &signers.allowed,
        operator_signature,
        Role::Operator,
        &expected,
    )
    .map_err(|why| {
        refuse(
            format!(
                "the operator's signature of run {} does not hold: {why}",
                args.run
            ),
            "approvals of it could never count; start a new run",
        )
    })?;
    let parts = crate::signature::Payload::parse(&operator_signature.payload)
        .map(|payload| payload.parts)
        .map_err(|why| refuse(format!("the operator's payload: {why}"), "start a new run"))?;
    let counted = crate::gates::count(
        rule,
        &record.approvals,
        &crate::gates::Counting {
            run_id: &record.run_id,
            fingerprint: plan_hash,
            parts: &parts,
            operator: &record.operator,
            operator_signature: Some(operator_signature),
            at: now,
        },
    );
    let counted_keys: Vec<&str> = counted
        .signatures
        .iter()
        .map(|signature| signature.key.as_str())
        .collect();
    let run = &args.run;
    crate::gates::sign_plan(
        signers,
        key,
        &crate::gates::Signing {
            role: Role::Approver,
            run_id: &record.run_id,
            fingerprint: plan_hash,
            parts: &parts,
        },
        |public| {
            let principal = crate::gates::approver_principal(
                rule,
                signers,
                public,
                args.name.as_deref(),
                emergency,
            )?;
            let fingerprint = crate::signature::fingerprint(public);
            let other = "another approver of the environment must approve".to_owned();
            if fingerprint == operator.key {
                return Err((
                    format!(
                        "key {fingerprint} signed run {run} as its operator ({}), who cannot approve it",
                        operator.principal
                    ),
                    other,
                ));
            }
            if principal == operator.principal {
                return Err((
                    format!("{principal} started run {run} and cannot approve it"),
                    other,
                ));
            }
            if counted_keys.contains(&fingerprint.as_str())
                || counted.valid.contains(&principal)
            {
                return Err((
                    format!("{principal} already approved run {run} (key {fingerprint})"),
                    "approvals need distinct people with distinct keys".to_owned(),
                ));
            }
            Ok(principal)
        },
    )
    .map_err(|(message, hint)| refuse(message, hint))
}

/// Records the confirmation of a manual step's checklist.
pub fn confirm(_cli: &Cli, args: &ConfirmArgs) -> Result<u8, Failure> {
    let dir = state::find_run(&args.run, args.state_dir.as_deref())
        .map_err(|error| refuse(error.to_string(), "pass `--state-dir DIR`"))?;
    let path = state::journal_path(&dir);
    let record = journal::read(&path).map_err(|error| Failure::Internal(error.into()))?;
    let Some(step) = record.steps.get(&args.step) else {
        // A name the runbook does not have is a typo, not a step to come.
        if let Ok(runbook) = crate::runbook::load(std::path::Path::new(&record.file)) {
            let ids: Vec<&str> = runbook
                .steps
                .iter()
                .map(|step| step.id.0.as_str())
                .collect();
            if !ids.contains(&args.step.as_str()) {
                let guess = crate::diagnostic::did_you_mean(&args.step, ids.iter().copied())
                    .map(|near| format!(" (did you mean `{near}`?)"))
                    .unwrap_or_default();
                return Err(refuse(
                    format!(
                        "runbook `{}` has no step `{}`{guess}",
                        runbook.name, args.step
                    ),
                    format!("its steps: {}", ids.join(", ")),
                ));
            }
        }
        return Err(refuse(
            format!("run {} has not reached step `{}`", args.run, args.step),
            "confirm a manual step once the run waits at it",
        ));
    };
    if step.status != Some(Status::Waiting) {
        return Err(refuse(
            format!(
                "step `{}` of run {} is not waiting for a confirmation",
                args.step, args.run
            ),
            format!(
                "its status is {}",
                step.status.map_or("running", |status| status.as_str())
            ),
        ));
    }
    let items: Vec<String> = step
        .summary
        .lines()
        .filter_map(|line| line.strip_prefix("[ ] ").map(str::to_owned))
        .collect();
    state::append_event(
        &path,
        Some(&args.step),
        EventKind::Confirmed {
            by: args.name.clone(),
            items: items.clone(),
        },
        false,
    )
    .map_err(|error| Failure::Internal(error.into()))?;
    outln!("✓ {} confirmed `{}`:", args.name, args.step)?;
    for item in items {
        outln!("  [x] {item}")?;
    }
    outln!("continue with `runbook resume {}`", args.run)?;
    Ok(exit::SUCCESS)
}
