//! Seed Examples 2 and 3 (`policies/app-server.yaml` + `database.yaml`,
//! applied together) end to end, group references (`sg:`) and membership
//! changes, and two groups on one interface.
//!
//! One L2 segment, every host on-link in 10.0.0.0/8 and fd00::/16:
//! lb 10.0.0.10 / fd00::10 (load-balancer), app 10.0.1.10 / fd00:1::10
//! (app-server), db 10.0.2.5 / fd00:2::5 (database), outsider 10.0.3.3 /
//! fd00:3::3 (no group, unfiltered). Each filtered host runs its own `sgctl`
//! (`-n` its namespace): apply both files, then attach eth0 to its group.
use std::path::{Path, PathBuf};

use common::{seed::*, *};
use Outcome::{Connected, TimedOut};

use crate::common;

fn both_files() -> Vec<PathBuf> {
    vec![policy("app-server.yaml"), policy("database.yaml")]
}

/// On `host`: `sgctl apply FILES`, then `sgctl attach eth0 --groups GROUPS`.
fn apply_and_attach(lab: &Lab, host: &LabHost, files: &[PathBuf], groups: &str) -> Sgctl {
    let sg = Sgctl::new(lab, host);
    let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let report = sg.apply(&files);
    assert_eq!(
        report["interfaces"].as_array().map(Vec::len),
        Some(0),
        "the files name no interfaces, so apply attaches none: {report:#}"
    );
    let changes = sg.attach("eth0", groups);
    assert_eq!(changes[0]["change"], "attached", "attach eth0 --groups {groups}: {changes:#}");
    let status = sg.status();
    let ifaces = &status["interfaces"];
    assert_eq!(ifaces[0]["interface"], "eth0", "{status:#}");
    let want: Vec<&str> = groups.split(',').collect();
    assert_eq!(ifaces[0]["groups"], serde_json::json!(want), "{status:#}");
    sg
}

#[test]
fn examples2_3_app_server_and_database() {
    let a = app_lab("ex23");
    let listeners = app_listeners(&a);

    let files = both_files();
    apply_and_attach(&a.lab, &a.lb, &files, "load-balancer");
    apply_and_attach(&a.lab, &a.app, &files, "app-server");
    apply_and_attach(&a.lab, &a.db, &files, "database");
    expect_all("examples 2 and 3", app_db_enforced(&a));

    // 3306 allowed but nothing listening: the database's own RST reaches app.
    drop(listeners.db);
    expect_all("3306 allowed, nothing listening on db", app_db_down(&a));
}

#[test]
fn membership_change_follows_sg_references() {
    let AppLab { lab, app, db, outsider, .. } = app_lab("members");
    let _db_l = listen(&db, &["10.0.2.5:3306"]);
    let original = both_files();
    let sg = apply_and_attach(&lab, &db, &original, "database");

    expect_all(
        "outsider is not an app-server",
        vec![tcp(&app, "10.0.2.5:3306", Connected), tcp(&outsider, "10.0.2.5:3306", TimedOut)],
    );

    // The same policy with the outsider listed as an app-server member.
    let tmp = TempDir::new("members");
    let widened = tmp.write(
        "app-server.yaml",
        &replace_once(
            &policy_text("app-server.yaml"),
            r#"app-server:    [10.0.1.0/24, "fd00:1::/64"]"#,
            r#"app-server:    [10.0.1.0/24, "fd00:1::/64", 10.0.3.3]"#,
        ),
    );
    let report = sg.apply(&[&widened, &policy("database.yaml")]);
    assert_eq!(report["generation"], 3, "apply, attach, apply: three generations: {report:#}");
    assert!(
        report["interfaces"].as_array().is_some_and(|c| c.iter().any(|c| c["interface"] == "eth0")),
        "re-apply keeps eth0 (attached by command) and updates it: {report:#}"
    );
    assert_eq!(sg.status()["interfaces"][0]["groups"], serde_json::json!(["database"]));
    expect_all(
        "outsider listed as an app-server member",
        vec![tcp(&outsider, "10.0.2.5:3306", Connected), tcp(&app, "10.0.2.5:3306", Connected)],
    );

    // A connection opened while the outsider is a member, kept open.
    let mut kept = open(&outsider, "10.0.2.5:3306");

    // Back to the original members: new connections are dropped again, the
    // tracked one carries on (AWS), until the table is flushed.
    let files: Vec<&Path> = original.iter().map(PathBuf::as_path).collect();
    let report = sg.apply(&files);
    assert_eq!(report["generation"], 4, "{report:#}");
    expect_all(
        "outsider removed from app-server members",
        vec![tcp(&outsider, "10.0.2.5:3306", TimedOut), tcp(&app, "10.0.2.5:3306", Connected)],
    );
    assert_eq!(kept.echo(ALLOWED), Connected, "{}: a tracked flow survives the narrowing", kept.name());

    sg.json(&["conntrack", "flush"]);
    assert_eq!(
        kept.echo(BLOCKED),
        TimedOut,
        "{}: after `conntrack flush` no rule allows it, so it is cut",
        kept.name()
    );
}

#[test]
fn two_groups_on_one_interface_is_the_union() {
    let AppLab { lab, lb, app, outsider, .. } = app_lab("union");
    let _app_l = listen(&app, &["10.0.1.10:8080", "10.0.1.10:443", "10.0.1.10:22"]);
    apply_and_attach(&lab, &app, &both_files(), "app-server,load-balancer");

    expect_all(
        "app-server + load-balancer on app's eth0",
        vec![
            // app-server: 8080 from sg:load-balancer.
            tcp(&lb, "10.0.1.10:8080", Connected),
            tcp(&outsider, "10.0.1.10:8080", TimedOut),
            // load-balancer: 443 from anywhere (IPv4).
            tcp(&outsider, "10.0.1.10:443", Connected),
            tcp(&lb, "10.0.1.10:443", Connected),
            // Neither allows 22.
            tcp(&lb, "10.0.1.10:22", TimedOut),
            tcp(&outsider, "10.0.1.10:22", TimedOut),
        ],
    );
}
