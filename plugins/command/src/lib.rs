//! `command`: runs one program on the host through the host's command
//! capability (the exact program and argument patterns of the step's
//! `grants.command`, confined by Landlock, no inherited environment), and
//! on rollback the program that undoes it. The literal commands of the
//! source runbooks (`alembic upgrade head`, `kubectl rollout status`,
//! `aws rds describe-db-instances`, `psql -c`) become steps this way.

use runbook_sdk::command::{Command, Outcome as Ran};
use runbook_sdk::{
    Capability, Deserialize, Error, HumanDuration, JsonSchema, Outcome, Outputs, PlannedAction,
    Step,
};
use std::collections::BTreeMap;

struct CommandStep;

/// The program to run, and the one that undoes it.
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Params {
    /// The program's path, as `grants.command` names it.
    program: String,
    /// Its arguments.
    #[serde(default)]
    args: Vec<String>,
    /// Its environment (it inherits none); values may hold secrets
    /// (`${{ secrets.db_url }}`), put in on the host.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Where it runs: a path its grant lets it read or write (default:
    /// a scratch folder of its own).
    #[serde(default)]
    dir: Option<String>,
    /// What it reads on standard input.
    #[serde(default)]
    stdin: Option<String>,
    /// How long it may run (default: the step's timeout).
    #[serde(default)]
    timeout: Option<HumanDuration>,
    /// Exit codes that mean success.
    #[serde(default = "success")]
    success_codes: Vec<i32>,
    /// A regular expression its standard output must match for the step
    /// to succeed (`alembic current` showing `\(head\)`).
    #[serde(default)]
    expect_stdout: Option<String>,
    /// Outputs read from standard output: name → a regular expression
    /// whose first group is the value (`{ revision = '^(\w+)' }`).
    #[serde(default)]
    outputs: BTreeMap<String, String>,
    /// The program that undoes this one, run by `rollback`.
    #[serde(default)]
    rollback: Option<Undo>,
}

/// The program `rollback` runs.
#[derive(Deserialize, JsonSchema)]
#[serde(crate = "runbook_sdk::serde", deny_unknown_fields)]
#[schemars(crate = "runbook_sdk::schemars")]
struct Undo {
    /// Its path, as `grants.command` names it.
    program: String,
    /// Its arguments.
    #[serde(default)]
    args: Vec<String>,
    /// Its environment; the step's `env` is not inherited.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Where it runs.
    #[serde(default)]
    dir: Option<String>,
    /// How long it may run.
    #[serde(default)]
    timeout: Option<HumanDuration>,
}

fn success() -> Vec<i32> {
    vec![0]
}

/// The most of standard output kept as the `stdout` output.
const MAX_STDOUT_OUTPUT: usize = 64 * 1024;

fn command(
    program: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
    dir: Option<&String>,
    timeout: Option<HumanDuration>,
) -> Command {
    let mut command = Command::new(program).args(args.iter().cloned());
    for (name, value) in env {
        command = command.env(name, value);
    }
    if let Some(dir) = dir {
        command = command.dir(dir);
    }
    if let Some(timeout) = timeout {
        command = command.timeout(timeout.get());
    }
    command
}

/// How a run ended, in one line: `exit 3` or `killed by signal 9`.
fn ended(ran: &Ran) -> String {
    match (ran.exit_code, ran.signal) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended".to_owned(),
    }
}

/// The last lines of `text`, for a failure message.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn check_program(path: &str, program: &str) -> Result<(), Error> {
    if program.is_empty() || runbook_sdk::unresolved(program) {
        return Ok(());
    }
    if !program.contains('/') {
        return Err(Error::invalid_param(
            path,
            format!(
                "`{program}` is not a path: name the program as its grant does, e.g. `/usr/bin/{program}`"
            ),
        ));
    }
    Ok(())
}

/// `pattern` as a regular expression, or what is wrong with it at `path`.
fn pattern(path: &str, pattern: &str) -> Result<regex::Regex, Error> {
    regex::RegexBuilder::new(pattern)
        .multi_line(true)
        .build()
        .map_err(|error| Error::invalid_param(path, format!("not a regular expression: {error}")))
}

fn check_patterns(params: &Params) -> Result<(), Error> {
    if let Some(expected) = &params.expect_stdout
        && !runbook_sdk::unresolved(expected)
    {
        pattern("expect_stdout", expected)?;
    }
    for (name, text) in &params.outputs {
        let path = format!("outputs.{name}");
        if ["exit_code", "stdout"].contains(&name.as_str()) {
            return Err(Error::invalid_param(
                path,
                format!("`{name}` is an output the step always gives: name this one otherwise"),
            ));
        }
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::invalid_param(
                path,
                "an output's name is letters, digits and `_`, so `steps.ID.outputs.NAME` can name it",
            ));
        }
        if runbook_sdk::unresolved(text) {
            continue;
        }
        if pattern(&path, text)?.captures_len() < 2 {
            return Err(Error::invalid_param(
                path,
                "the value is the expression's first group: put the part to keep in parentheses, e.g. `^(\\w+)`",
            ));
        }
    }
    Ok(())
}

fn check_env(path: &str, env: &BTreeMap<String, String>) -> Result<(), Error> {
    for name in env.keys() {
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Error::invalid_param(
                format!("{path}.{name}"),
                "an environment variable's name is letters, digits and `_`, not starting with a digit",
            ));
        }
    }
    Ok(())
}

impl Step for CommandStep {
    type Params = Params;
    const CAPABILITIES: &'static [Capability] = &[Capability::Command];
    /// Its failures repeat when run again (an exit code, a mismatch): none is transient.
    const TRANSIENT: &'static str = "";
    const OPTIONAL_CAPABILITIES: &'static [Capability] = &[Capability::Secrets];

    fn check(params: &Params) -> Result<(), Error> {
        check_program("program", &params.program)?;
        check_env("env", &params.env)?;
        check_patterns(params)?;
        if params.success_codes.is_empty() {
            return Err(Error::invalid_param(
                "success_codes",
                "no exit code would mean success: list at least one (default [0])",
            ));
        }
        if let Some(undo) = &params.rollback {
            check_program("rollback.program", &undo.program)?;
            check_env("rollback.env", &undo.env)?;
        }
        Ok(())
    }

    fn plan(params: &Params) -> Result<Vec<PlannedAction>, Error> {
        let run = command(
            &params.program,
            &params.args,
            &params.env,
            params.dir.as_ref(),
            params.timeout,
        );
        let mut actions = vec![PlannedAction::write(format!("run `{}`", run.line()))];
        if let Some(undo) = &params.rollback {
            let undo = command(
                &undo.program,
                &undo.args,
                &undo.env,
                undo.dir.as_ref(),
                undo.timeout,
            );
            actions.push(PlannedAction::read(format!(
                "on rollback, run `{}`",
                undo.line()
            )));
        }
        Ok(actions)
    }

    fn run(params: Params) -> Result<Outcome, Error> {
        let mut run = command(
            &params.program,
            &params.args,
            &params.env,
            params.dir.as_ref(),
            params.timeout,
        );
        if let Some(input) = &params.stdin {
            run = run.stdin(input);
        }
        let ran = run.run()?;
        let succeeded = ran
            .exit_code
            .is_some_and(|code| params.success_codes.contains(&code));
        if !succeeded {
            let said = tail(&ran.stderr, 5);
            let said = if said.is_empty() {
                tail(&ran.stdout, 5)
            } else {
                said
            };
            return Err(Error::failed(format!(
                "`{}` failed ({}){}",
                run.line(),
                ended(&ran),
                if said.is_empty() {
                    String::new()
                } else {
                    format!(":\n{said}")
                }
            )));
        }
        let stdout = ran.stdout.trim_end();
        if let Some(expected) = &params.expect_stdout
            && !pattern("expect_stdout", expected)?.is_match(stdout)
        {
            return Err(Error::failed(format!(
                "`{}` ({}) printed what `expect_stdout` does not match (`{expected}`):\n{}",
                run.line(),
                ended(&ran),
                tail(stdout, 5)
            )));
        }
        let mut outcome = Outcome::new(format!(
            "`{}`: {} in {} ms",
            run.line(),
            ended(&ran),
            ran.elapsed_ms
        ))
        .output("exit_code", ran.exit_code.unwrap_or_default().to_string())
        .output("stdout", cut(stdout, MAX_STDOUT_OUTPUT));
        for (name, text) in &params.outputs {
            let found = pattern(&format!("outputs.{name}"), text)?
                .captures(stdout)
                .and_then(|groups| groups.get(1))
                .map(|group| group.as_str().to_owned());
            let Some(value) = found else {
                return Err(Error::failed(format!(
                    "`{}` ({}): output `{name}` not found, `{text}` matches nothing in:\n{}",
                    run.line(),
                    ended(&ran),
                    tail(stdout, 5)
                )));
            };
            outcome = outcome.output(name, value);
        }
        Ok(outcome)
    }

    fn rollback(params: Params, _outputs: &Outputs) -> Result<String, Error> {
        let Some(undo) = &params.rollback else {
            return Ok("nothing to undo: the step names no `rollback` program".to_owned());
        };
        let run = command(
            &undo.program,
            &undo.args,
            &undo.env,
            undo.dir.as_ref(),
            undo.timeout,
        );
        let ran = run.run()?;
        if ran.exit_code != Some(0) {
            return Err(Error::failed(format!(
                "`{}` failed ({}):\n{}",
                run.line(),
                ended(&ran),
                tail(&ran.stderr, 5)
            )));
        }
        Ok(format!("ran `{}`", run.line()))
    }
}

runbook_sdk::export_step!(CommandStep);

#[cfg(test)]
mod tests {
    use super::{Params, check_patterns, cut, tail};

    fn params(extra: &str) -> Params {
        runbook_sdk::serde_json::from_str(&format!(r#"{{"program": "/usr/bin/alembic"{extra}}}"#))
            .unwrap()
    }

    #[test]
    fn patterns_are_checked_before_anything_runs() {
        assert!(
            check_patterns(&params(
                r#", "expect_stdout": "\\(head\\)", "outputs": {"revision": "^(\\w+)"}"#
            ))
            .is_ok()
        );
        let broken = check_patterns(&params(r#", "expect_stdout": "(head""#)).unwrap_err();
        assert!(
            format!("{broken:?}").contains("expect_stdout"),
            "{broken:?}"
        );
        let groupless =
            check_patterns(&params(r#", "outputs": {"revision": "^\\w+"}"#)).unwrap_err();
        assert!(
            format!("{groupless:?}").contains("first group"),
            "{groupless:?}"
        );
        let reserved = check_patterns(&params(r#", "outputs": {"stdout": "(.*)"}"#)).unwrap_err();
        assert!(
            format!("{reserved:?}").contains("always gives"),
            "{reserved:?}"
        );
    }

    #[test]
    fn a_failure_quotes_the_last_lines_that_say_something() {
        assert_eq!(tail("a\n\nb\nc\n\n", 2), "b\nc");
        assert_eq!(tail("", 3), "");
    }

    #[test]
    fn outputs_are_cut_at_a_character_boundary() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("hello", 10), "hello");
    }
}
