//! Safe in a real estate (issue 15), the render and plan side: what a
//! target held while secret is never shown, templates read nothing but
//! `templates/`, no input overflows a stack, renderings are timed alone,
//! commands are rendered, and no render worker outlives a command.

use crate::support::{Project, Run};

/// A copy of examples/quickstart (the file source; no server needed).
fn quickstart() -> Project {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart");
    let p = Project::new("");
    let copy = std::process::Command::new("cp").arg("-r").arg(src.join(".")).arg(p.dir.path()).status().unwrap();
    assert!(copy.success());
    let _ = std::fs::remove_dir_all(p.path("out"));
    p
}

const QUICKSTART_PASSWORD: &str = "prod-password-from-the-vault";

fn assert_hidden(what: &str, r: &Run, secret: &str) {
    assert!(!r.all().contains(secret), "{what}: the previous secret is shown:\n{r:?}");
}

#[test]
fn plan_never_shows_what_a_target_held_while_secret() {
    let p = quickstart();
    assert_eq!(p.run(&["reconcile", "--once"]).code, 0);
    // The output stops reading secrets: its new content is plain, what the
    // file holds is the old password.
    let config = p.read("cfgsync.toml");
    let line = config.lines().find(|l| l.starts_with("DATABASE_URL = ")).unwrap();
    p.write("cfgsync.toml", &config.replace(line, "DATABASE_URL = \"postgres://api:literal@db/api\""));
    for args in [&["plan", "--env", "prod"][..], &["plan", "--env", "prod", "--output", "json"]] {
        let r = p.run(args);
        assert_eq!(r.code, 0, "{r:?}");
        assert_hidden(&format!("{args:?}"), &r, QUICKSTART_PASSWORD);
        assert!(r.stdout.contains("previous content was secret: not shown"), "{args:?}: says why: {r:?}");
        assert!(r.stdout.contains("DATABASE_URL"), "{args:?}: the changed entry is named: {r:?}");
    }
    let r = p.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_hidden("reconcile", &r, QUICKSTART_PASSWORD);
    // Now it holds plain content this instance wrote: shown again.
    p.write("cfgsync.toml", &p.read("cfgsync.toml").replace("api:literal@db", "api:other@db"));
    let r = p.run(&["plan", "--env", "prod"]);
    assert!(r.stdout.contains("-DATABASE_URL=postgres://api:literal@db/api"), "plain on both sides: a diff: {r:?}");
}

#[test]
fn a_file_recorded_as_tainted_stays_secret_whatever_its_mode() {
    let p = quickstart();
    assert_eq!(p.run(&["reconcile", "--once", "--env", "prod"]).code, 0);
    // Someone made the secret file world-readable: the record still says
    // it was written from a tainted output.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p.path("out/prod/api.env"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = p.read("cfgsync.toml");
    let line = config.lines().find(|l| l.starts_with("DATABASE_URL = ")).unwrap();
    p.write("cfgsync.toml", &config.replace(line, "DATABASE_URL = \"postgres://api:literal@db/api\""));
    let r = p.run(&["plan", "--env", "prod", "--output", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_hidden("plan --output json", &r, QUICKSTART_PASSWORD);
    assert!(r.stdout.contains("previous content was secret"), "{r:?}");
}
