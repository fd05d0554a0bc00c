//! `sgctl flows`: the recent records of the agent's flow log, filtered.
use crate::{
    cli::{output::table, FlowAction, FlowFormat, FlowsArgs},
    flowlog::{
        file,
        record::{Action, Record},
        top,
    },
};

/// Prints the top `n` of `records`: a table, or with `json` `{"top": […]}`.
fn print_top(records: Vec<&Record>, n: usize, rank: top::Rank, json: bool) -> anyhow::Result<()> {
    let talkers = top::top(records, n, rank);
    if json {
        let top: Vec<serde_json::Value> = talkers.iter().map(top::Talker::json).collect();
        return crate::cli::output::print_json(&serde_json::json!({ "top": top }));
    }
    let (header, rows) = top::table_rows(&talkers);
    crate::out!("{}", table(&header, &rows));
    Ok(())
}

/// Rotated files read besides the current one.
const ROTATED_READ: u32 = 9;

pub fn run(args: &FlowsArgs, json: bool) -> anyhow::Result<()> {
    let all = file::read_all(&args.file, ROTATED_READ)?;
    let since = args.since.map(|d| crate::timings::unix_now().saturating_sub(d.as_secs()));
    let matching: Vec<&Record> =
        all.iter().filter(|r| matches(args, r) && since.is_none_or(|s| top::ends_after(r, s))).collect();
    if let Some(n) = args.top {
        return print_top(matching, n, args.by, json);
    }
    let recent = &matching[matching.len().saturating_sub(args.last)..];
    if json {
        let records: Vec<serde_json::Value> = recent.iter().map(|r| r.json()).collect();
        return crate::cli::output::print_json(&serde_json::json!({ "records": records }));
    }
    match args.format {
        FlowFormat::V2 => recent.iter().for_each(|r| crate::outln!("{}", r.v2_line())),
        FlowFormat::Custom => recent.iter().for_each(|r| crate::outln!("{}", r.custom_line())),
        FlowFormat::Table => {
            let rows: Vec<Vec<String>> = recent
                .iter()
                .map(|r| {
                    let addr = |a: &str, p: &str| match (p, a.contains(':')) {
                        ("-", _) => a.to_owned(),
                        (_, true) => format!("[{a}]:{p}"),
                        (_, false) => format!("{a}:{p}"),
                    };
                    let verdict = match r.action() {
                        Some(Action::WouldDrop) => "WOULD-DROP".to_owned(),
                        _ => r.get("action").to_owned(),
                    };
                    let why = if r.get("rule-id") == "-" { r.get("drop-reason") } else { r.get("rule-id") };
                    vec![
                        r.get("start").to_owned(),
                        r.get("interface-id").to_owned(),
                        r.get("flow-direction").to_owned(),
                        r.get("protocol").to_owned(),
                        addr(r.get("srcaddr"), r.get("srcport")),
                        addr(r.get("dstaddr"), r.get("dstport")),
                        r.get("packets").to_owned(),
                        r.get("bytes").to_owned(),
                        verdict,
                        why.to_owned(),
                        r.get("group").to_owned(),
                    ]
                })
                .collect();
            crate::out!(
                "{}",
                table(
                    &[
                        "START",
                        "IFACE",
                        "DIR",
                        "PROTO",
                        "SOURCE",
                        "DESTINATION",
                        "PACKETS",
                        "BYTES",
                        "ACTION",
                        "RULE/REASON",
                        "GROUP"
                    ],
                    &rows
                )
            );
        }
    }
    Ok(())
}

fn matches(args: &FlowsArgs, r: &Record) -> bool {
    let is = |field: &str, want: &Option<String>| want.as_deref().is_none_or(|w| r.get(field) == w);
    let same = |field: &str, want: Option<String>| want.is_none_or(|w| r.get(field) == w);
    let action = args.action.is_none_or(|a| {
        r.action()
            == Some(match a {
                FlowAction::Accept => Action::Accept,
                FlowAction::Reject => Action::Reject,
                FlowAction::WouldDrop => Action::WouldDrop,
            })
    });
    let rule = args
        .rule
        .as_deref()
        .is_none_or(|want| r.get("rule-id") == want || r.get("group").split(',').any(|g| g == want));
    let iface = args.iface.as_deref().is_none_or(|want| {
        let id = r.get("interface-id");
        id == want || id.split('@').next() == Some(want)
    });
    r.get("log-status") != "-"
        && action
        && rule
        && iface
        && is("interface-id", &None)
        && same("srcaddr", args.src.map(|a| a.to_string()))
        && same("dstaddr", args.dst.map(|a| a.to_string()))
        && same("srcport", args.sport.map(|p| p.to_string()))
        && same("dstport", args.dport.map(|p| p.to_string()))
}
