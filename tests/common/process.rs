//! Running the `tollgate` binary as a subprocess: its exit code and output, a password on its
//! standard input, the address a server it starts announces.

use std::process::{Command, Output, Stdio};

/// How a command ended: its exit code (-1 when killed by a signal), standard output and
/// standard error.
pub type Outcome = (i32, String, String);

/// `tollgate serve` as a process in `dir`, as an operator starts it: nothing inherited from the
/// test's environment, a port of its own (`BIND=127.0.0.1:0`, announced on stderr, which is
/// piped for `announced_address`), no stdin, stdout dropped.
pub fn serve_command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.arg("serve")
        .env_clear()
        .env("BIND", "127.0.0.1:0")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `cmd` to its end.
pub fn run(cmd: &mut Command) -> Outcome {
    outcome(cmd.output().unwrap())
}

/// Runs `cmd` to its end with `stdin` written to its standard input (a password, say).
pub fn run_with_stdin(cmd: &mut Command, stdin: &str) -> Outcome {
    outcome(output_with_stdin(cmd, stdin))
}

fn outcome(output: Output) -> Outcome {
    let Output {
        status,
        stdout,
        stderr,
    } = output;
    (
        status.code().unwrap_or(-1),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

/// Runs `cmd` with `stdin` written to its standard input (a password, say) and returns what
/// it printed.
pub fn output_with_stdin(cmd: &mut std::process::Command, stdin: &str) -> std::process::Output {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The address a spawned `tollgate` process announces on stderr: the first word after
/// `marker` (e.g. "listening on "), read on a thread that keeps draining stderr afterwards.
pub fn announced_address(
    child: &mut std::process::Child,
    marker: &'static str,
) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let stderr = child.stderr.take().expect("stderr is piped");
    let (found, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split(marker).nth(1) {
                let word = rest.split_whitespace().next().unwrap_or_default();
                let _ = found.send(word.trim_end_matches('/').to_owned());
            }
        }
    });
    address
}
