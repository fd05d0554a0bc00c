//! `sgctl status`: what is attached where, and how full conntrack is.
use std::path::Path;

use serde::Serialize;

use crate::{
    cli::output::{print_json, table},
    control::{restore, Target},
    datapath::{
        attach,
        conntrack::Usage,
        hooks,
        links::{self, LinkHealth},
    },
    fleet::report::FleetStatus,
    netns,
    state::records::{EgressHook, IngressHook, Mode},
};

#[derive(Serialize)]
struct Status {
    scopes: Vec<ScopeStatus>,
    /// Named namespaces with a saved policy (`restore`) that do not exist:
    /// restored when they do (`sgctl restore`), forgotten by the next change
    /// once deleted after their state was made.
    saved_without_namespace: Vec<String>,
}

#[derive(Serialize)]
struct ScopeStatus {
    netns: Option<String>,
    generation: Option<u64>,
    sources: Vec<String>,
    interfaces: Vec<IfaceStatus>,
    /// Bytes the kernel charges for the scope's own maps (`ACTIVE`, the policy records).
    kernel_memory: u64,
    /// An `apply --confirm-within` awaiting `sgctl confirm`.
    pending_confirmation: Option<PendingStatus>,
    /// The fleet, as `sgctl agent --etcd` last reported it (docs/fleet.md).
    fleet: Option<FleetStatus>,
    /// Interfaces the saved policy names that are not filtered: they do
    /// not exist, or a restore could not attach them.
    unfiltered: Vec<Unfiltered>,
}

#[derive(Serialize)]
struct Unfiltered {
    interface: String,
    /// Whether the interface exists (then its not being filtered is a failure).
    exists: bool,
}

#[derive(Serialize)]
struct PendingStatus {
    /// The generation that rolls back unless confirmed.
    generation: u64,
    /// Seconds since the Unix epoch.
    deadline: u64,
    seconds_left: u64,
}

#[derive(Serialize)]
struct IfaceStatus {
    interface: String,
    ifindex: u32,
    groups: Vec<String>,
    ingress: IngressHook,
    /// The hook asked for (`auto`, `xdp`, `tc`); `xdp` with a tc ingress:
    /// its XDP hook was taken, and tc filters instead.
    mode: Mode,
    /// Each link as the kernel has it: `ok`, or what is wrong (`detached`,
    /// `missing`, `other_device`, `other_program`, `not_first`). A link not
    /// `ok` is repaired by the next `apply` and by the agent.
    links: LinkHealth,
    /// The program ids of links that are `ok`.
    egress: EgressHook,
    ingress_program_id: Option<u32>,
    egress_program_id: Option<u32>,
    /// Where sgctl's programs stand on their hooks, from the kernel:
    /// attached, and first on their side (`null` with `hooks_error`).
    standing: Option<Standing>,
    /// Why the hooks could not be read.
    hooks_error: Option<String>,
    generation: u64,
    /// Flows tracked, both tables.
    conntrack_entries: u64,
    /// Flows each conntrack table holds at most.
    conntrack_capacity: u32,
    /// Both tables' use, and what happened to their flows.
    conntrack: Usage,
    /// Bytes the kernel charges for the interface's maps and records (their `memlock`).
    kernel_memory: u64,
    /// Programs of others on the same hooks (XDP, tcx and clsact, ingress and egress), in the order they run.
    other_programs: Vec<hooks::OtherProgram>,
}

#[derive(Serialize)]
struct Standing {
    ingress: hooks::Standing,
    egress: hooks::Standing,
}

pub fn run(targets: &[Target], json: bool, wait: std::time::Duration) -> anyhow::Result<()> {
    let saved_without_namespace = match targets.first() {
        Some(t) => t
            .lib
            .scopes()?
            .into_iter()
            .filter_map(|scope| match scope {
                crate::state::Scope::Netns(name) if !Path::new("/run/netns").join(&name).exists() => Some(name),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    let mut status = Status { scopes: Vec::new(), saved_without_namespace };
    for target in targets {
        let scope = match scope_status(target, wait) {
            Ok(scope) => scope,
            // Read while a change was half made: an interface in force when
            // its records were read, its maps being unpinned by a detach (or
            // pinned by an attach) since. Read again once that change is done.
            Err(_) => {
                let _settled = target.state.lock_shared(wait)?;
                scope_status(target, wait)?
            }
        };
        status.scopes.push(scope);
    }
    if json {
        return print_json(&status);
    }
    if status.scopes.is_empty() {
        crate::outln!("nothing applied or attached");
    }
    for name in &status.saved_without_namespace {
        crate::outln!("netns {name}: a policy is saved for it, and it does not exist (restored when it does)");
    }
    for s in &status.scopes {
        let scope = s.netns.as_deref().map_or("host".to_owned(), |n| format!("netns {n}"));
        match s.generation {
            Some(g) => crate::outln!("{scope}: policy generation {g} from {}", s.sources.join(", ")),
            None => crate::outln!("{scope}: no policy applied"),
        }
        if let Some(p) = &s.pending_confirmation {
            crate::outln!(
                "  generation {} rolls back in {} s unless `sgctl confirm` runs (deadline {} UTC epoch s)",
                p.generation,
                p.seconds_left,
                p.deadline
            );
        }
        let rows: Vec<Vec<String>> = s
            .interfaces
            .iter()
            .map(|i| {
                let id = |v: Option<u32>| v.map_or("-".into(), |v| v.to_string());
                vec![
                    i.interface.clone(),
                    i.groups.join(","),
                    i.ingress.to_string(),
                    i.egress.to_string(),
                    format!("{}/{}", id(i.ingress_program_id), id(i.egress_program_id)),
                    i.generation.to_string(),
                    format!("{}/{}", i.conntrack.confirmed, i.conntrack.capacity),
                    format!("{}/{}", i.conntrack.pending, i.conntrack.capacity),
                    crate::datapath::memory::human(i.kernel_memory),
                ]
            })
            .collect();
        let header = [
            "INTERFACE",
            "GROUPS",
            "INGRESS",
            "EGRESS",
            "PROG IDS (IN/OUT)",
            "GEN",
            "CONFIRMED",
            "PENDING",
            "KERNEL MEMORY",
        ];
        crate::out!("{}", table(&header, &rows));
        for i in &s.interfaces {
            for problem in i.links.problems() {
                crate::outln!("  {}: {problem}: NOT FILTERED as it should be; `sgctl apply` repairs it", i.interface);
            }
            if i.mode == Mode::Xdp && !i.ingress.is_xdp() {
                crate::outln!("  {}: asked for XDP, which it could not have: ingress on tc instead", i.interface);
            }
            if let Some(e) = &i.hooks_error {
                crate::outln!("  {}: cannot read its hooks: {e}", i.interface);
            }
            for side in i.standing.iter().flat_map(|s| [&s.ingress, &s.egress]) {
                if !side.attached {
                    crate::outln!(
                        "  {}: sgctl's program {} is NOT on {}: the interface is not filtered that way",
                        i.interface,
                        side.program_id,
                        side.hook
                    );
                }
            }
            let c = &i.conntrack;
            if c.promotion_refused + c.pending_evicted > 0 {
                crate::outln!(
                    "  {}: conntrack: {} pending flows evicted by newer ones, {} kept pending because the \
                     confirmed table was full",
                    i.interface,
                    c.pending_evicted,
                    c.promotion_refused
                );
            }
            for p in &i.other_programs {
                let order = if p.before_sgctl { "before" } else { "after" };
                let what = match p.priority {
                    Some(prio) if p.id == 0 => format!("filter {} (priority {prio})", p.name),
                    Some(prio) => format!("program {} ({}, priority {prio})", p.id, p.name),
                    None => format!("program {} ({})", p.id, p.name),
                };
                crate::outln!("  {}: {} {what} runs {order} sgctl", i.interface, p.hook);
            }
        }
        for u in &s.unfiltered {
            match u.exists {
                true => crate::outln!("  {}: saved but NOT FILTERED (a restore could not attach it)", u.interface),
                false => crate::outln!("  {}: saved, does not exist (yet): attached when it appears", u.interface),
            }
        }
        if !s.interfaces.is_empty() {
            let total = s.kernel_memory + s.interfaces.iter().map(|i| i.kernel_memory).sum::<u64>();
            crate::outln!("kernel memory charged to the maps: {} (memlock)", crate::datapath::memory::human(total));
        }
        for line in s.fleet.iter().flat_map(fleet_lines) {
            crate::outln!("{line}");
        }
    }
    Ok(())
}

/// One scope's status, read without waiting for a change under way (see
/// `run`).
fn scope_status(target: &Target, wait: std::time::Duration) -> anyhow::Result<ScopeStatus> {
    // Reports do not wait for changes, except a rollback whose deadline
    // has passed: it is under way (or about to be), and the report waits
    // for it (at most `wait`) rather than show half of each policy, such
    // as the old policy back in force beside the pending record it is
    // about to remove.
    let _settled = match target.lib.pending(&target.scope)? {
        Some(p) if restore::time_left(&p).is_zero() => target.state.lock_shared(wait).ok(),
        _ => None,
    };
    let policy = target.policy()?;
    let mut interfaces = Vec::new();
    for record in target.interfaces()? {
        let dir = target.state.iface_dir(&target.scope, &record.ifname);
        let health = links::check(&dir, record.ifindex, &record.ifname);
        let ids = attach::program_ids(&dir).ok();
        // The kernel's word: it outranks a record a killed sgctl left behind.
        let hooks_now = attach::hooks(&dir, record.ingress).ok();
        let maps = target.maps(&record.ifname);
        let (standing, other_programs, hooks_error) = match hooks::survey(&record.ifname, &dir, record.ingress) {
            Ok(s) => (Some(Standing { ingress: s.ingress, egress: s.egress }), s.others, None),
            Err(e) => (None, Vec::new(), Some(format!("{e:#}"))),
        };
        let conntrack = maps.conntrack_usage()?;
        interfaces.push(IfaceStatus {
            ingress: hooks_now.map_or(record.ingress, |h| h.ingress),
            egress: hooks_now.map_or(record.egress, |h| h.egress),
            standing,
            hooks_error,
            other_programs,
            ingress_program_id: ids.map(|i| i.0).filter(|_| health.ingress.is_ok()),
            egress_program_id: ids.map(|i| i.1).filter(|_| health.egress.is_ok()),
            links: health,
            mode: record.mode,
            conntrack_entries: conntrack.confirmed + conntrack.pending,
            conntrack_capacity: conntrack.capacity,
            conntrack,
            kernel_memory: maps.kernel_memory()?,
            interface: record.ifname,
            ifindex: record.ifindex,
            groups: record.groups,
            generation: record.generation,
        });
    }
    let unfiltered = match target.lib.applied_head(&target.scope)? {
        Some(saved) => saved
            .interfaces
            .into_iter()
            .filter(|i| !interfaces.iter().any(|f| f.interface == i.ifname))
            .map(|i| Unfiltered { exists: netns::ifindex(&i.ifname).is_some(), interface: i.ifname })
            .collect(),
        None => Vec::new(),
    };
    Ok(ScopeStatus {
        unfiltered,
        netns: target.scope.netns().map(str::to_owned),
        generation: policy.as_ref().map(|p| p.generation),
        sources: policy.map(|p| p.paths()).unwrap_or_default(),
        interfaces,
        kernel_memory: if target.state.scope_dir(&target.scope).exists() {
            crate::datapath::maps::pinned_memory(&target.state.scope_dir(&target.scope))?
        } else {
            0
        },
        pending_confirmation: target.lib.pending(&target.scope)?.map(|p| {
            // By CLOCK_BOOTTIME: a step of the wall clock moves neither.
            let left = restore::time_left(&p);
            PendingStatus {
                generation: p.generation,
                deadline: restore::wall_deadline(left),
                seconds_left: left.as_millis().div_ceil(1000) as u64,
            }
        }),
        fleet: crate::fleet::report::status(&target.lib, &target.scope)?,
    })
}

/// The fleet's lines of `sgctl status`.
fn fleet_lines(s: &FleetStatus) -> Vec<String> {
    let r = &s.record;
    let mut out = Vec::new();
    let state = if !s.agent_running {
        format!(
            "agent not running (last report {} s ago): the membership last known stays enforced",
            crate::timings::unix_now().saturating_sub(r.updated_at)
        )
    } else if r.connected {
        format!("connected, in sync {} s ago", s.seconds_since_sync.unwrap_or_default())
    } else {
        format!(
            "NOT CONNECTED ({}): the membership last known stays enforced; last in sync {}",
            r.last_error.as_deref().unwrap_or("connecting"),
            s.seconds_since_sync.map_or("never".to_owned(), |t| format!("{t} s ago"))
        )
    };
    out.push(format!("fleet: host {} under {} on {}: {state}", r.host_id, r.prefix, r.endpoints.join(",")));
    let lease = r.lease.map_or("none".to_owned(), |l| format!("{l:x}"));
    let policy = match (r.applied_generation, r.published_generation) {
        (Some(a), Some(p)) if a == p => format!("published generation {a} in force"),
        (Some(a), Some(p)) => format!("published generation {a} in force, {p} published"),
        (None, Some(p)) => format!("its own files in force, generation {p} published"),
        (_, None) => "no policy published".to_owned(),
    };
    out.push(format!("  lease {lease} ({} s), {} full reads, {policy}", r.lease_ttl, r.resyncs));
    if let Some((generation, why)) = &r.refused_generation {
        out.push(format!("  refused published generation {generation}: {why}"));
    }
    let publishing: Vec<String> = r
        .publishing
        .iter()
        .map(|(g, a)| format!("{g} ({})", a.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")))
        .collect();
    out.push(format!(
        "  publishes: {}",
        if publishing.is_empty() { "nothing".to_owned() } else { publishing.join(", ") }
    ));
    let members: Vec<String> = r.members.iter().map(|(g, n)| format!("{g} {n}")).collect();
    out.push(format!(
        "  members from other hosts: {}",
        if members.is_empty() { "none".to_owned() } else { members.join(", ") }
    ));
    if !r.hosts.is_empty() {
        let rows: Vec<Vec<String>> = r
            .hosts
            .iter()
            .map(|h| {
                vec![
                    format!("  {}", h.host),
                    h.policy_generation.map_or("its own files".to_owned(), |g| g.to_string()),
                    h.groups.join(","),
                ]
            })
            .collect();
        let table = table(&["  HOST", "POLICY GENERATION", "GROUPS"], &rows);
        out.extend(table.lines().map(str::to_owned));
    }
    for (key, why) in &r.refused {
        out.push(format!("  refused {key}: {why}"));
    }
    out
}
