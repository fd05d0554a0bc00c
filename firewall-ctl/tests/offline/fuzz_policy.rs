//! The policy fuzzer that runs on stable in every `cargo test` (and so in
//! CI): a proptest generator of structurally plausible policy YAML — the
//! real keys and values, good and bad, in block and flow style, quoted and
//! plain, with anchors, aliases and a few random byte edits — held to the
//! property of `firewall_ctl::testing::fuzzing` (no panic, every error located), plus
//! the example policies and every input the cargo-fuzz target failed on
//! (`fuzz/regressions/`).
//! `cargo xtask fuzz [SECS]` runs the coverage-guided libFuzzer target on
//! the same property for longer.
//!
//! `SGCTL_FUZZ_CASES=N` changes the number of generated cases (default
//! [`DEFAULT_CASES`], about 20 s on the 2-core CI machine). A failing case is
//! shrunk, printed, and its seed kept in `proptest-regressions/` beside this
//! file (commit it: it is replayed first on every later run).

use std::path::Path;

use firewall_ctl::testing::fuzzing::{check_files, files_of, FILE_SEPARATOR};
use proptest::{prelude::*, sample::select, test_runner::Config};

/// Generated policies per run.
const DEFAULT_CASES: u32 = 16_000;

fn cases() -> u32 {
    std::env::var("SGCTL_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES)
}

/// A YAML value before rendering.
#[derive(Clone, Debug, PartialEq)]
enum Y {
    S(String),
    L(Vec<Y>),
    M(Vec<(String, Y)>),
}

// ---- vocabularies: what a policy says, and near misses ---------------------
//
// Each field draws mostly from its valid values and now and then from near
// misses or from anything at all, so that a good share of the inputs are
// valid policies that reach the compiler (`the_generator_makes_valid_policies_too`).

const NAMES: &[&str] = &["a", "b", "web", "db", "sg-0a1b", "web.server_1"];
const BAD_NAMES: &[&str] = &["A", "-x", "", "a b", "x/y", "sg:a"];
const IFACES: &[&str] = &["eth0", "lo", "veth9", "x"];
const BAD_IFACES: &[&str] = &["averyveryverylongname", "a/b", ".", "eth0:1", ""];
const PROTOCOLS: &[&str] =
    &["tcp", "udp", "icmp", "icmpv6", "all", "-1", "6", "17", "1", "58", "0", "47", "255", "TCP"];
const BAD_PROTOCOLS: &[&str] = &["256", "ip", "", "-2", "0x6"];
const PORTS: &[&str] =
    &["22", "80", "443", "1", "65535", "8000-8100", "1-65535", "all", "ssh", "https", "dns", "22-22"];
const BAD_PORTS: &[&str] =
    &["0", "65536", "100-1", "1-", "-5", "22 - 23", "0x16", "99999999999999999999999", "http-https", "0-10"];
const ICMP: &[&str] = &["0", "3", "8", "128", "255", "4"];
const BAD_ICMP: &[&str] = &["256", "-1", "echo", ""];
const PEERS: &[&str] = &[
    "0.0.0.0/0",
    "::/0",
    "10.0.0.0/8",
    "10.0.0.5",
    "192.0.2.0/24",
    "fd00::/8",
    "fd00::5",
    "sg:a",
    "sg:web",
    "pl:office",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "::ffff:10.0.0.1",
    "2001:db8::/32",
];
const BAD_PEERS: &[&str] = &[
    "10.0.0.1/8",
    "10.0.0.0/33",
    "2001:db8::/129",
    "sg:nosuch",
    "sg:",
    "pl:nosuch",
    "sg-123",
    "010.0.0.0/8",
    "1.2.3.4/+8",
    "fe80::1%eth0",
    "10.0.0.0/08",
    "",
];
/// Addresses for `members:` and `prefix_lists:` (no sg: or pl: there).
const MEMBERS: &[&str] = &["10.0.0.5", "10.1.0.0/16", "192.0.2.0/24", "fd00::5", "2001:db8::/32", "0.0.0.0/0"];
const NUMBERS: &[&str] = &["30", "60", "180", "432000", "1024", "4194304"];
const BAD_NUMBERS: &[&str] = &["65536", "4194305", "0", "-5", "1e3", "29", ""];
const TEXTS: &[&str] = &[
    "Allow HTTP",
    "",
    "é ü 中",
    "tab\there",
    "line\nbreak",
    "\u{feff}bom",
    "quote\"s",
    "colon: space",
    "# hash",
    "&anchor",
    "*alias",
    "!tag",
    "{flow}",
    "[list]",
    "- dash",
    "'single'",
    "~",
    "null",
    "yes",
];
const BAD_TEXTS: &[&str] = &["nul\u{0}byte", "bell\u{7}", "del\u{7f}", "nel\u{85}", "ls\u{2028}"];

fn s(pool: &'static [&'static str]) -> BoxedStrategy<Y> {
    select(pool).prop_map(|t| Y::S(t.to_owned())).boxed()
}

/// How an input is made: `clean` inputs use only valid values, keys and
/// YAML (so about half the inputs are policies that reach the compiler),
/// the others mix in near misses, wrong shapes, stray keys and byte edits.
#[derive(Clone, Copy)]
struct Mix {
    clean: bool,
}

impl Mix {
    /// A valid value; in a noisy input, sometimes a near miss.
    fn pick(self, good: &'static [&'static str], bad: &'static [&'static str]) -> BoxedStrategy<Y> {
        if self.clean {
            s(good)
        } else {
            prop_oneof![12 => s(good), 1 => s(bad)].boxed()
        }
    }

    /// One value or a short list of them, as most policy fields allow.
    fn one_or_list(self, good: &'static [&'static str], bad: &'static [&'static str]) -> BoxedStrategy<Y> {
        let list = prop::collection::vec(self.pick(good, bad), usize::from(self.clean)..4);
        // A clean list names each value once (a group listed twice for an interface is an error).
        let clean = self.clean;
        let list = list.prop_map(move |mut items| {
            if clean {
                let mut seen = std::collections::HashSet::new();
                items.retain(|y| !matches!(y, Y::S(t) if !seen.insert(t.clone())));
            }
            Y::L(items)
        });
        prop_oneof![3 => self.pick(good, bad), 2 => list].boxed()
    }

    /// A map with `keys` (each with its chance to be there and its values);
    /// in a noisy input, a value of the wrong shape or a key that does not
    /// belong now and then.
    fn fields(
        self,
        keys: Vec<(&'static str, f64, BoxedStrategy<Y>)>,
        wrong: &'static [&'static str],
    ) -> BoxedStrategy<Y> {
        let mut per_key: Vec<BoxedStrategy<Option<(String, Y)>>> = keys
            .into_iter()
            .map(|(k, chance, value)| {
                let v = if self.clean { value } else { prop_oneof![15 => value, 1 => anything()].boxed() };
                let entry = v.prop_map(move |v| (k.to_owned(), v));
                // `weighted` takes a probability strictly between 0 and 1.
                match chance {
                    c if c >= 1.0 => entry.prop_map(Some).boxed(),
                    c if c <= 0.0 => Just(None).boxed(),
                    c => prop::option::weighted(c, entry).boxed(),
                }
            })
            .collect();
        if !self.clean {
            let wrong = (select(wrong), anything()).prop_map(|(k, v)| (k.to_owned(), v));
            per_key.push(prop::option::weighted(0.05, wrong).boxed());
        }
        per_key.prop_map(|entries| Y::M(entries.into_iter().flatten().collect())).boxed()
    }

    /// A map from 1-3 names to values of `value`; in a noisy input, now and
    /// then a name twice.
    fn named(
        self,
        good: &'static [&'static str],
        bad: &'static [&'static str],
        value: BoxedStrategy<Y>,
    ) -> BoxedStrategy<Y> {
        let name = self.pick(good, bad).prop_map(|y| match y {
            Y::S(t) => t,
            _ => String::new(),
        });
        let twice = if self.clean { Just(false).boxed() } else { prop::bool::weighted(0.05).boxed() };
        (prop::collection::vec((name, value), 1..4), twice)
            .prop_map(|(mut entries, keep_twice)| {
                if !keep_twice {
                    let mut seen = std::collections::HashSet::new();
                    entries.retain(|(k, _)| seen.insert(k.clone()));
                }
                Y::M(entries)
            })
            .boxed()
    }

    /// A rule whose fields mostly suit its protocol (ports for tcp and udp,
    /// ICMP type and code for ICMP), with `peer_key` for its peers.
    fn rule(self, peer_key: &'static str) -> BoxedStrategy<Y> {
        let stray = if self.clean { 0.0 } else { 0.03 };
        self.pick(PROTOCOLS, BAD_PROTOCOLS)
            .prop_flat_map(move |protocol| {
                let p = match &protocol {
                    Y::S(t) => t.to_ascii_lowercase(),
                    _ => String::new(),
                };
                let has_ports = matches!(p.as_str(), "tcp" | "udp" | "6" | "17");
                let is_icmp = matches!(p.as_str(), "icmp" | "icmpv6" | "1" | "58");
                let peers = if self.clean { 1.0 } else { 0.97 };
                // A code needs a type: clean inputs leave codes to the noisy ones.
                let code = if self.clean { 0.0 } else { 0.5 };
                self.fields(
                    vec![
                        ("protocol", peers, Just(protocol).boxed()),
                        ("ports", if has_ports { peers } else { stray }, self.one_or_list(PORTS, BAD_PORTS)),
                        ("icmp_type", if is_icmp { 0.5 } else { stray }, self.pick(ICMP, BAD_ICMP)),
                        ("icmp_code", if is_icmp { code } else { stray }, self.pick(ICMP, BAD_ICMP)),
                        (peer_key, peers, self.one_or_list(PEERS, BAD_PEERS)),
                        ("description", 0.3, self.pick(TEXTS, BAD_TEXTS)),
                    ],
                    &["port", "<<", "source", "destination", "cidr"],
                )
            })
            .boxed()
    }

    fn group(self) -> BoxedStrategy<Y> {
        self.fields(
            vec![
                ("description", 0.3, self.pick(TEXTS, BAD_TEXTS)),
                ("mode", 0.2, self.pick(&["enforce", "audit"], &["block", "Audit", ""])),
                ("inbound", 0.8, prop::collection::vec(self.rule("source"), 0..4).prop_map(Y::L).boxed()),
                ("outbound", 0.5, prop::collection::vec(self.rule("destination"), 0..3).prop_map(Y::L).boxed()),
            ],
            &["modes", "rules", "<<", "ingress"],
        )
    }

    fn conntrack(self) -> BoxedStrategy<Y> {
        let n = || self.pick(NUMBERS, BAD_NUMBERS);
        self.fields(
            vec![
                ("tcp_established_timeout", 0.3, n()),
                ("udp_stream_timeout", 0.3, n()),
                ("udp_timeout", 0.3, n()),
                ("max_entries", 0.3, n()),
            ],
            &["icmp_timeout"],
        )
    }

    fn policy(self) -> BoxedStrategy<Y> {
        let policy = self.fields(
            vec![
                ("groups", 1.0, self.named(NAMES, BAD_NAMES, self.group())),
                ("members", 0.3, self.named(NAMES, BAD_NAMES, self.one_or_list(MEMBERS, BAD_PEERS))),
                (
                    "prefix_lists",
                    0.3,
                    self.named(&["office", "branch"], BAD_NAMES, self.one_or_list(MEMBERS, BAD_PEERS)),
                ),
                ("interfaces", 0.3, self.named(IFACES, BAD_IFACES, self.one_or_list(NAMES, BAD_NAMES))),
                ("conntrack", 0.15, self.conntrack()),
            ],
            &["group", "<<", "version"],
        );
        if self.clean {
            policy.prop_map(define_every_name).boxed()
        } else {
            policy
        }
    }
}

/// Any value at all, for a field given the wrong shape.
fn anything() -> BoxedStrategy<Y> {
    let leaf = prop_oneof![s(TEXTS), s(BAD_TEXTS), s(PEERS), s(NUMBERS), "[ -~]{0,6}".prop_map(Y::S)];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Y::L),
            prop::collection::vec((select(NAMES).prop_map(str::to_owned), inner), 0..3).prop_map(Y::M),
        ]
    })
    .boxed()
}

/// Defines every group and prefix list a clean policy may name (sg:,
/// pl:, members:, interfaces:) that it does not define yet, so clean
/// inputs are valid policies.
fn define_every_name(y: Y) -> Y {
    let Y::M(mut top) = y else { return y };
    let mut section = |key: &str, names: &[&str], value: &dyn Fn() -> Y| {
        let at = top.iter().position(|(k, _)| k == key).unwrap_or_else(|| {
            top.push((key.to_owned(), Y::M(Vec::new())));
            top.len() - 1
        });
        if let Y::M(entries) = &mut top[at].1 {
            for name in names {
                if !entries.iter().any(|(k, _)| k == name) {
                    entries.push(((*name).to_owned(), value()));
                }
            }
        }
    };
    section("groups", NAMES, &|| Y::M(Vec::new()));
    section("prefix_lists", &["office"], &|| Y::L(vec![Y::S("192.0.2.0/24".into()), Y::S("2001:db8::/32".into())]));
    Y::M(top)
}

// ---- rendering ---------------------------------------------------------------

/// Writes a [`Y`] as YAML text; each choice of style (block or flow,
/// quoting, an anchor here, an alias there) reads the next byte of `choices`.
struct Render<'a> {
    choices: &'a [u8],
    /// Only valid YAML: no unsafe plain scalars, no dangling aliases.
    clean: bool,
    next: usize,
    /// Anchors given so far, and those whose node is complete (an alias
    /// to an anchor whose node is still open would be a cycle).
    anchors: usize,
    complete: Vec<(usize, Y)>,
}

impl Render<'_> {
    fn choose(&mut self, n: u8) -> u8 {
        let c = self.choices.get(self.next % self.choices.len().max(1)).copied().unwrap_or(0);
        self.next += 1;
        c % n
    }

    fn scalar(&mut self, text: &str) -> String {
        let plain_ok = !text.is_empty()
            && text.chars().all(|c| c.is_alphanumeric() || "./:-_ ".contains(c))
            && !text.starts_with(['-', ' ', ':'])
            && !text.ends_with([' ', ':'])
            && !text.contains(": ");
        match self.choose(8) {
            0 => format!("'{}'", text.replace('\'', "''")),
            1 => double_quoted(text),
            // Now and then plain whatever it holds: the parser must cope.
            2 if !self.clean && self.choose(4) == 0 => text.to_owned(),
            _ if plain_ok => text.to_owned(),
            _ => double_quoted(text),
        }
    }

    /// A `&aN ` prefix now and then (`None` when there is none); aliases
    /// refer back to these once [`Self::completed`].
    fn anchor(&mut self) -> (String, Option<usize>) {
        if self.choose(12) == 0 {
            self.anchors += 1;
            (format!("&a{} ", self.anchors - 1), Some(self.anchors - 1))
        } else {
            (String::new(), None)
        }
    }

    fn completed(&mut self, anchor: Option<usize>, y: &Y) {
        if let Some(n) = anchor {
            self.complete.push((n, y.clone()));
        }
    }

    /// Now and then, an alias in place of `y` to a complete anchored node
    /// equal to it. In a noisy input also to any anchored node, and rarely
    /// to one still open (the parser must refuse that).
    fn alias(&mut self, y: &Y) -> Option<String> {
        if self.anchors == 0 || self.choose(8) != 0 {
            return None;
        }
        let n = usize::from(self.choose(255));
        if !self.clean {
            match self.choose(16) {
                0 => return Some(format!("*a{}", n % self.anchors)),
                1..=4 if !self.complete.is_empty() => {
                    return Some(format!("*a{}", self.complete[n % self.complete.len()].0));
                }
                _ => {}
            }
        }
        let same: Vec<usize> = self.complete.iter().filter(|(_, v)| v == y).map(|(a, _)| *a).collect();
        (!same.is_empty()).then(|| format!("*a{}", same[n % same.len()]))
    }

    fn flow(&mut self, y: &Y) -> String {
        if let Some(alias) = self.alias(y) {
            return alias;
        }
        let (prefix, anchor) = self.anchor();
        let text = match y {
            Y::S(t) => self.scalar(t),
            Y::L(items) => {
                let items: Vec<String> = items.iter().map(|i| self.flow(i)).collect();
                format!("[{}]", items.join(", "))
            }
            Y::M(entries) => {
                let entries: Vec<String> =
                    entries.iter().map(|(k, v)| format!("{}: {}", self.scalar(k), self.flow(v))).collect();
                format!("{{{}}}", entries.join(", "))
            }
        };
        self.completed(anchor, y);
        prefix + &text
    }

    /// The value after `key:` or `-`, through the end of its last line.
    fn block(&mut self, y: &Y, indent: usize) -> String {
        let pad = " ".repeat(indent);
        let out = match y {
            Y::L(items) if !items.is_empty() && self.choose(3) != 0 => {
                let (prefix, anchor) = self.anchor();
                let mut out = format!(" {prefix}\n");
                for item in items {
                    out += &format!("{pad}-{}", self.block(item, indent + 2));
                }
                self.completed(anchor, y);
                out
            }
            Y::M(entries) if !entries.is_empty() && self.choose(3) != 0 => {
                let (prefix, anchor) = self.anchor();
                let mut out = format!(" {prefix}\n");
                for (k, v) in entries {
                    let key = self.scalar(k);
                    out += &format!("{pad}{key}:{}", self.block(v, indent + 2));
                }
                self.completed(anchor, y);
                out
            }
            _ => format!(" {}\n", self.flow(y)),
        };
        out
    }

    fn document(&mut self, y: &Y) -> String {
        match y {
            Y::M(entries) if self.choose(4) != 0 => {
                let mut out = String::new();
                for (k, v) in entries {
                    let key = self.scalar(k);
                    out += &format!("{key}:{}", self.block(v, 2));
                }
                out
            }
            _ => self.flow(y) + "\n",
        }
    }
}

/// A YAML double-quoted scalar: `\\`, `"` and every character outside
/// printable ASCII escaped the YAML way.
fn double_quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xffff => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

/// Byte edits after rendering: (where, what, with which byte).
type Edit = (usize, u8, u8);

const EDIT_BYTES: &[u8] = b":{}[],&*!|>'\"#-? \n\t\r%@`\\";

fn apply_edits(text: &str, edits: &[Edit]) -> String {
    let mut t = text.to_owned();
    for &(at, op, byte) in edits {
        if t.is_empty() {
            break;
        }
        let mut at = at % t.len();
        while !t.is_char_boundary(at) {
            at -= 1;
        }
        let c = char::from(EDIT_BYTES[usize::from(byte) % EDIT_BYTES.len()]);
        match op % 4 {
            0 => t.insert(at, c),
            1 => {
                let end = (at + usize::from(byte % 8) + 1..=t.len()).find(|&e| t.is_char_boundary(e));
                t.replace_range(at..end.unwrap_or(t.len()), "");
            }
            2 => {
                let end = (at + usize::from(byte % 16) + 1..=t.len()).find(|&e| t.is_char_boundary(e));
                let piece = t[at..end.unwrap_or(t.len())].to_owned();
                t.insert_str(at, &piece);
            }
            _ => {
                let end = (at + 1..=t.len()).find(|&e| t.is_char_boundary(e)).unwrap_or(t.len());
                t.replace_range(at..end, &c.to_string());
            }
        }
    }
    t
}

/// One generated input: one or two files, rendered, and in a noisy input
/// perhaps edited.
fn input() -> impl Strategy<Value = String> {
    prop::bool::ANY.prop_flat_map(|clean| {
        let mix = Mix { clean };
        let doc = (mix.policy(), prop::collection::vec(any::<u8>(), 1..64));
        let edits = if clean {
            Just(Vec::new()).boxed()
        } else {
            prop_oneof![
                2 => Just(Vec::new()),
                1 => prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4),
            ]
            .boxed()
        };
        // Clean inputs are one file: two would define the same names.
        let files = if clean { 1..2 } else { 1..3 };
        (prop::collection::vec(doc, files), edits).prop_map(move |(docs, edits)| {
            let texts: Vec<String> = docs
                .iter()
                .map(|(y, choices)| Render { choices, clean, next: 0, anchors: 0, complete: Vec::new() }.document(y))
                .collect();
            apply_edits(&texts.join(FILE_SEPARATOR), &edits)
        })
    })
}

proptest! {
    #![proptest_config(Config { cases: cases(), ..Config::default() })]

    #[test]
    fn generated_policies_parse_and_compile_or_fail_located(text in input()) {
        let files = files_of(text.as_bytes());
        if let Err(why) = check_files(&files) {
            prop_assert!(false, "{}\ninput:\n{}", why, text);
        }
    }
}

/// The generator reaches the compiler, not only the parser's errors: a
/// run with no valid policy at all would test little.
#[test]
fn the_generator_makes_valid_policies_too() {
    use proptest::{strategy::ValueTree as _, test_runner::TestRunner};
    let mut runner = TestRunner::deterministic();
    let strategy = input();
    let valid = (0..500)
        .filter(|_| {
            let text = strategy.new_tree(&mut runner).expect("a case").current();
            firewall_ctl::policy::parse_sources(&files_of(text.as_bytes())).is_ok_and(|p| !p.groups.is_empty())
        })
        .count();
    // About 40% are; a generator change that breaks this would test little.
    assert!(valid >= 100, "only {valid} of 500 generated inputs are valid policies with groups");
}

/// The example policies and every input the coverage-guided fuzzer ever
/// failed on (`cargo xtask fuzz` keeps each in `fuzz/regressions/`) hold
/// the property: its findings are regression tests here, on stable.
#[test]
fn example_policies_and_fuzz_regressions_hold_the_property() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = Vec::new();
    for dir in ["policies", "fuzz/regressions"] {
        let dir = root.join(dir);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.extension().is_some_and(|e| e == "md") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if let Err(why) = check_files(&files_of(&bytes)) {
                panic!("{}: {why}", path.display());
            }
            checked.push(path);
        }
    }
    assert!(checked.iter().any(|p| p.ends_with("web-server.yaml")), "examples not found: {checked:?}");
    assert!(checked.iter().any(|p| p.to_string_lossy().contains("regressions")), "no regression inputs: {checked:?}");
}
