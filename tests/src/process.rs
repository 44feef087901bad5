//! Service processes tied to this one: started through a small shell
//! wrapper that stops the service when this process's end of a pipe
//! closes, so that a service never outlives the test or tool that started
//! it, even when that process dies without cleaning up (a panicking test,
//! a static that is never dropped, SIGKILL).

use std::process::{Child, Command, Stdio};

/// The wrapper: keep the parent's pipe on fd 3, run the service, stop it
/// when the pipe closes, and exit when the service exits.
const WRAPPER: &str = r#"exec 3<&0
"$@" </dev/null &
pid=$!
( read -r _ <&3; kill "$pid" 2>/dev/null ) &
wait "$pid""#;

/// A running service process.
#[derive(Debug)]
pub struct Tied {
    child: Child,
}

impl Tied {
    /// Starts `program` with `args` and extra environment, its output
    /// discarded.
    pub fn spawn(
        program: &str,
        args: &[String],
        environment: &[(&str, &str)],
    ) -> std::io::Result<Self> {
        let child = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("sh")
            .arg(program)
            .args(args)
            .envs(environment.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Tied { child })
    }

    /// The exit status, if the service has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Tied {
    fn drop(&mut self) {
        // Closing the pipe stops the service; the wrapper then exits.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
