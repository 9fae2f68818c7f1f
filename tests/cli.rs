//! The `tollgate` binary: help, argument errors, keygen, configuration errors, development key
//! generation, migrate and create-admin — run as a subprocess, like an operator would.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tollgate::secret::{ExposeSecret as _, decode_key};

use crate::common::{Backend, PASSWORD, TestApp, TestDatabase, run, run_with_stdin};
use crate::on_both_backends;

on_both_backends!(
    migrate_applies_once_then_reports_up_to_date,
    create_admin_reads_the_password_from_stdin,
    promoting_an_existing_account_needs_a_flag_and_ends_its_sessions
);

/// The binary with a clean environment (nothing inherited from the developer's shell).
fn tollgate(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.env_clear().current_dir(dir).stdin(Stdio::null());
    cmd
}

#[test]
fn every_command_has_help() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["keygen", "--help"],
        vec!["create-admin", "--help"],
    ] {
        let (code, stdout, _) = run(tollgate(dir.path()).args(&args));
        assert_eq!(code, 0, "{args:?}");
        assert!(stdout.contains("Usage: tollgate"), "{args:?}: {stdout}");
    }
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--bogus"],
        vec!["frobnicate"],
        vec!["create-admin"],
        vec!["create-admin", "--email"],
    ] {
        let (code, stdout, stderr) = run(tollgate(dir.path()).args(&args));
        assert_eq!(code, 2, "{args:?}");
        assert!(stdout.is_empty(), "{args:?}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("tollgate: "), "{stderr}");
    }
}

#[test]
fn keygen_prints_fresh_keys_of_the_right_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let (code, first, _) = run(tollgate(dir.path()).arg("keygen"));
    assert_eq!(code, 0);
    let values: Vec<(&str, &str)> = first.lines().map(|l| l.split_once('=').unwrap()).collect();
    assert_eq!(
        values.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        ["SECRET_KEY", "ENCRYPTION_KEY", "TOKEN_PEPPER"]
    );
    assert!(decode_key::<64>(values[0].1).is_ok());
    assert!(decode_key::<32>(values[1].1).is_ok());
    assert!(decode_key::<32>(values[2].1).is_ok());
    let (_, second, _) = run(tollgate(dir.path()).arg("keygen"));
    assert_ne!(first, second, "every run is random");
}

#[test]
fn production_refuses_to_start_without_valid_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(tollgate(dir.path())
        .env("TOLLGATE_ENV", "production")
        .env("BIND", "127.0.0.1:0"));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("configuration error: SECRET_KEY is not set"),
        "{stderr}"
    );
    assert!(
        !dir.path().join(".env").exists(),
        "production never writes secrets"
    );
    assert!(!stderr.contains("panicked"));

    let malformed = "bm90LTY0LWJ5dGVz"; // base64 of "not-64-bytes"
    let (code, _, stderr) = run(tollgate(dir.path())
        .env("TOLLGATE_ENV", "production")
        .env("SECRET_KEY", malformed)
        .env("ENCRYPTION_KEY", tollgate::secret::encode_base64(&[1; 32]))
        .env("TOKEN_PEPPER", tollgate::secret::encode_base64(&[2; 32])));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("SECRET_KEY must decode to 64 bytes (got 12)"),
        "{stderr}"
    );
    assert!(!stderr.contains(malformed), "the value is never echoed");
}

/// `.env` holds every secret: production refuses to start (every command) while group or
/// others can read it; development says so on every start.
#[test]
fn an_env_file_others_can_read_is_refused_in_production_and_warned_about_in_development() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join(".env");
    let mut text: String = crate::common::secret_env()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    text.push_str(&format!(
        "DATABASE_URL=sqlite://{}\nBIND=127.0.0.1:0\n",
        dir.path().join("t.db").display()
    ));
    std::fs::write(&env_file, text).unwrap();
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let expected = ".env is readable by group or others (mode 644): run `chmod 600 .env`";

    for args in [vec![], vec!["serve"], vec!["migrate"]] {
        let (code, _, stderr) = run(tollgate(dir.path())
            .args(&args)
            .env("TOLLGATE_ENV", "production"));
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
    assert!(
        !dir.path().join("t.db").exists(),
        "refused before touching anything"
    );

    let (code, _, stderr) = run(tollgate(dir.path()).arg("migrate"));
    assert_eq!(code, 0, "development goes on: {stderr}");
    assert!(stderr.contains(expected), "but says so: {stderr}");

    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, stderr) = run(tollgate(dir.path())
        .arg("migrate")
        .env("TOLLGATE_ENV", "production"));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("readable by group"), "{stderr}");
}

/// Start-up refusals that a misconfigured production (or a half-configured live key) gets.
#[test]
fn production_is_strict_about_cookies_and_live_keys_need_production() {
    let dir = tempfile::tempdir().unwrap();
    let base = |cmd: &mut Command| {
        for (k, v) in crate::common::secret_env() {
            cmd.env(k, v);
        }
        cmd.env("BIND", "127.0.0.1:0").env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("t.db").display()),
        );
    };
    let mut cmd = tollgate(dir.path());
    base(&mut cmd);
    let (code, _, stderr) = run(cmd
        .env("TOLLGATE_ENV", "production")
        .env("SESSION_COOKIE_SECURE", "false"));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("SESSION_COOKIE_SECURE must not be false in production"),
        "{stderr}"
    );

    let live = "sk_live_DUMMY0000000000000000";
    let mut cmd = tollgate(dir.path());
    base(&mut cmd);
    let (code, _, stderr) = run(cmd.env("STRIPE_SECRET_KEY", live));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("TOLLGATE_ENV is not set, but STRIPE_SECRET_KEY is a live key: set TOLLGATE_ENV=production"),
        "{stderr}"
    );
    assert!(!stderr.contains(live));
    assert!(!dir.path().join("t.db").exists());
}

#[test]
fn development_generates_missing_secrets_into_a_private_env_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dev.db");
    let mut child = tollgate(dir.path())
        .env("BIND", "127.0.0.1:0")
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !seen.contains("starting service") {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seen.contains("starting service"), "server started: {seen}");
    assert!(
        seen.contains("generated SECRET_KEY, ENCRYPTION_KEY, TOKEN_PEPPER"),
        "{seen}"
    );

    let env_file = dir.path().join(".env");
    let mode = std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let contents = std::fs::read_to_string(&env_file).unwrap();
    let value = |name: &str| {
        contents
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
            .unwrap()
    };
    let secret_key = decode_key::<64>(&value("SECRET_KEY")).unwrap();
    assert_eq!(secret_key.expose_secret().len(), 64);
    assert!(decode_key::<32>(&value("ENCRYPTION_KEY")).is_ok());
    assert!(
        !seen.contains(&value("SECRET_KEY")),
        "generated values are never printed"
    );
    assert!(
        db.exists(),
        "the database was created and migrated at start"
    );
}

async fn migrate_applies_once_then_reports_up_to_date(backend: Backend) {
    let database = TestDatabase::new(backend);
    let dir = tempfile::tempdir().unwrap();
    // The PostgreSQL template is already migrated; SQLite starts empty.
    let (code, stdout, stderr) = run(tollgate(dir.path())
        .arg("migrate")
        .env("DATABASE_URL", &database.url_string));
    assert_eq!(code, 0, "{stderr}");
    let migrations = std::fs::read_dir("migrations/sqlite").unwrap().count();
    match backend {
        Backend::Sqlite => assert!(
            stdout.starts_with(&format!("applied {migrations} migration(s): ")),
            "{stdout}"
        ),
        Backend::Postgres => assert_eq!(stdout.trim(), "database is up to date"),
    }
    let (code, stdout, _) = run(tollgate(dir.path())
        .arg("migrate")
        .env("DATABASE_URL", &database.url_string));
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), "database is up to date");
}

/// Instances started together on one new PostgreSQL database migrate it once between them:
/// each waits its turn, the first applies every migration, the others find none pending
/// (before, they raced and all but one failed to start).
#[test]
fn instances_starting_together_on_an_empty_postgres_database_migrate_it_once() {
    if !crate::common::postgres_available() {
        return;
    }
    let database = TestDatabase::empty(Backend::Postgres);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let (url, barrier) = (database.url.clone(), std::sync::Arc::clone(&barrier));
            std::thread::spawn(move || {
                let db = tollgate::db::Db::connect(url, 1).unwrap();
                barrier.wait();
                db.run_blocking(tollgate::db::run_migrations)
            })
        })
        .collect();
    let applied: Vec<usize> = starts
        .into_iter()
        .map(|start| start.join().unwrap().expect("every instance starts").len())
        .collect();
    let migrations = std::fs::read_dir("migrations/postgres").unwrap().count();
    assert_eq!(applied.iter().sum::<usize>(), migrations, "{applied:?}");
    assert!(
        applied.contains(&migrations),
        "one applied them all: {applied:?}"
    );
}

/// Every command that works on an existing database refuses a SQLite path that does not exist
/// (exit 1, naming it) and creates nothing; `migrate` and `create-admin --create` create it.
#[test]
fn commands_refuse_a_missing_sqlite_database_unless_asked_to_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.db");
    let url = format!("sqlite://{}", path.display());
    let commands: [&[&str]; 8] = [
        &[
            "service-token",
            "create",
            "--name",
            "x",
            "--scope",
            "byok:lease",
        ],
        &["service-token", "list"],
        &["service-token", "revoke", "--all"],
        &["rotate-key"],
        &["rotate-key", "--check"],
        &["revoke-sessions"],
        &["byok", "disable-leases"],
        &["byok", "enable-leases"],
    ];
    for args in commands {
        let (code, _, stderr) = run(tollgate(dir.path())
            .args(args)
            .env("DATABASE_URL", &url)
            .envs(crate::common::secret_env()));
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "the SQLite database {} does not exist",
                path.display()
            )),
            "{args:?}: {stderr}"
        );
        assert!(!path.exists(), "{args:?} created {}", path.display());
    }
    let stdin = format!("{PASSWORD}\n");
    let (code, _, stderr) = create_admin(dir.path(), &url, "root@example.com", &stdin);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(!path.exists(), "create-admin created {}", path.display());

    let args = ["--email", "root@example.com", "--create"];
    let (code, stdout, stderr) = create_admin_with(dir.path(), &url, &args, &stdin);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "created admin account root@example.com");
    assert!(path.exists());
    let (code, _, stderr) = run(tollgate(dir.path())
        .args(["revoke-sessions"])
        .env("DATABASE_URL", &url)
        .envs(crate::common::secret_env()));
    assert_eq!(code, 0, "an existing database is used: {stderr}");

    let fresh = dir.path().join("fresh.db");
    let (code, _, stderr) = run(tollgate(dir.path())
        .arg("migrate")
        .env("DATABASE_URL", format!("sqlite://{}", fresh.display())));
    assert_eq!(code, 0, "{stderr}");
    assert!(fresh.exists(), "migrate creates the database");
}

fn create_admin(
    dir: &std::path::Path,
    url: &str,
    email: &str,
    stdin: &str,
) -> (i32, String, String) {
    create_admin_with(dir, url, &["--email", email], stdin)
}

fn create_admin_with(
    dir: &std::path::Path,
    url: &str,
    args: &[&str],
    stdin: &str,
) -> (i32, String, String) {
    run_with_stdin(
        tollgate(dir)
            .arg("create-admin")
            .args(args)
            .env("DATABASE_URL", url),
        stdin,
    )
}

async fn create_admin_reads_the_password_from_stdin(backend: Backend) {
    let database = TestDatabase::migrated(backend);
    let dir = tempfile::tempdir().unwrap();
    let url = database.url_string.clone();

    let (code, _, stderr) = create_admin(dir.path(), &url, "root@example.com", "short\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("use at least 12 characters"), "{stderr}");
    let (code, _, stderr) =
        create_admin(dir.path(), &url, "not-an-email", &format!("{PASSWORD}\n"));
    assert_eq!(code, 2);
    assert!(stderr.contains("--email"), "{stderr}");

    let (code, stdout, stderr) = create_admin(
        dir.path(),
        &url,
        "Root@Example.com",
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "created admin account root@example.com");
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD));

    let app = TestApp::spawn_on(database, backend, |_| {}).await;
    let browser = app.browser();
    assert_eq!(
        browser.login("root@example.com", PASSWORD).await.status(),
        303
    );
    assert_eq!(browser.get("/admin").await.status(), 200);
    assert_eq!(app.count_events("admin_created"), 1);
}

/// Sign-up needs no email verification, so anyone can register the address an operator will
/// later promote. Promotion must not hand that person's live session admin rights.
async fn promoting_an_existing_account_needs_a_flag_and_ends_its_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let url = app.database_handle().url_string;
    let dir = tempfile::tempdir().unwrap();
    let squatter = app.signed_in_customer("admin@example.com").await;
    assert_eq!(squatter.get("/account").await.status(), 200);
    let bystander = app.signed_in_customer("someone@example.com").await;

    let stdin = "a brand new admin password\n";
    let (code, stdout, stderr) = create_admin(dir.path(), &url, "admin@example.com", stdin);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("already exists") && stderr.contains("--promote-existing"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert_eq!(app.count_events("admin_created"), 0);
    assert_eq!(
        squatter.get("/admin").await.status(),
        403,
        "still a customer"
    );

    let args = ["--email", "admin@example.com", "--promote-existing"];
    let (code, stdout, stderr) = create_admin_with(dir.path(), &url, &args, stdin);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ended its 1 session(s)"), "{stdout}");
    let res = squatter.get("/admin").await;
    // Tollgate's sign-in redirect (303 See Other, as everywhere else), not the console.
    assert_eq!(res.status(), 303, "the pre-registered session is gone");
    assert!(crate::common::location(&res).starts_with("/login"));
    assert_eq!(squatter.get("/account").await.status(), 303);
    assert_eq!(
        bystander.get("/account").await.status(),
        200,
        "other users keep theirs"
    );
    assert_eq!(
        squatter.login("admin@example.com", PASSWORD).await.status(),
        401,
        "the squatter's password no longer works"
    );
    let admin = app.browser();
    let res = admin
        .login("admin@example.com", "a brand new admin password")
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(admin.get("/admin").await.status(), 200);
    let events = app.events("admin_created");
    assert_eq!(events.len(), 1);
    let details: serde_json::Value = serde_json::from_str(&events[0].details).unwrap();
    assert_eq!(details["promoted"], true);
    assert_eq!(details["sessions_ended"], 1);
}
