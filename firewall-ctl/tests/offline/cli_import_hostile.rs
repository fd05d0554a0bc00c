//! `sgctl import aws` writes input strings as data, never as structure
//! (issue 15, item 6): hostile strings in every field an import reads —
//! newlines, quotes, `#`, `: `, YAML indicators, U+2028/U+2029/U+0085, NUL
//! and other control characters, the byte-order mark, non-characters, very
//! long ones, in group names, descriptions, VPC and owner ids, rule
//! descriptions, prefix-list entries and file names — and names that clash.
//! The output is read back with a real YAML parser that shares no code with
//! sgctl (PyYAML): it must hold exactly the groups and rules the summary
//! counts, with every description exactly as it was (cut at 255
//! characters), and `sgctl check` must count the same. The JSON comes both
//! written here (every field, any string) and from moto + boto3 (real
//! `describe-security-groups` output, with what AWS's XML can carry).
use std::{
    collections::BTreeMap,
    ffi::OsStr,
    path::Path,
    process::{Command, Stdio},
};

use common::*;
use serde_json::{json, Value};

use crate::common;

/// Strings an attacker who can name AWS resources (or hand over a JSON
/// dump) would try.
fn hostile() -> Vec<String> {
    let mut all: Vec<String> = [
        "web\nevil:\n  inbound: [{protocol: all, source: 0.0.0.0/0}]",
        "\n  evil: {protocol: all, source: \"0.0.0.0/0\"}\n#",
        "\"quoted\" 'single' \\ back\\slash \\n \\u0041",
        "# not a comment",
        "key: value",
        "- item",
        "[flow, seq]",
        "{flow: map}",
        "&anchor *alias !tag | > % @ ` ? ,",
        "line\u{2028}sep\u{2029}para\u{85}nel",
        "nul\0bell\u{7}tab\tcr\rlf\nesc\u{1b}del\u{7f}c1\u{9b}",
        "\u{feff}bom at the start and in\u{feff}side",
        "non\u{fffe}char\u{ffff}s",
        "emoji 🔥 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "...",
        "---",
        "",
        " ",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    all.push(format!("{}\nevil: x", "long ".repeat(2000)));
    all
}

fn sgctl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sgctl"));
    cmd.env_remove("SGCTL_STATE_DIR").stdin(Stdio::null());
    cmd
}

/// A description as the policy keeps it: at most 255 characters.
fn kept(s: &str) -> String {
    s.chars().take(255).collect()
}

/// What PyYAML makes of `file`, as JSON.
fn yaml_by_pyyaml(file: &Path) -> Value {
    let out = python("yaml_to_json.py", &[file.as_os_str()], "");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("yaml_to_json.py printed no JSON ({e}): {out}"))
}

/// The imported policy, read back: exactly the groups and rules the
/// summary counts, no key the policy format does not have, names unique;
/// returns (group name → its description, every rule description in order).
fn read_back(out: &Path, report: &Value) -> (BTreeMap<String, Option<String>>, Vec<Option<String>>) {
    let text = std::fs::read_to_string(out).expect("the imported policy");
    let doc = yaml_by_pyyaml(out);
    let top: Vec<&String> = doc.as_object().expect("a mapping").keys().collect();
    assert!(top.iter().all(|k| ["groups", "members", "prefix_lists"].contains(&k.as_str())), "{top:?}\n{text}");
    let groups = doc["groups"].as_object().expect("groups");
    assert_eq!(Some(groups.len() as u64), report["groups"].as_u64(), "groups PyYAML reads vs the summary:\n{text}");
    // A repeated name would collapse into one mapping entry: the count
    // above shows there is none, and this says so in words.
    let mut descriptions = BTreeMap::new();
    let mut rule_descriptions = Vec::new();
    for (name, g) in groups {
        let keys: Vec<&String> = g.as_object().expect("a group mapping").keys().collect();
        assert!(keys.iter().all(|k| ["description", "inbound", "outbound"].contains(&k.as_str())), "{name}: {keys:?}");
        descriptions.insert(name.clone(), g["description"].as_str().map(str::to_owned));
        for dir in ["inbound", "outbound"] {
            for rule in g[dir].as_array().unwrap_or_else(|| panic!("{name}.{dir} is a list:\n{text}")) {
                let keys: Vec<&String> = rule.as_object().expect("a rule mapping").keys().collect();
                let allowed = ["protocol", "ports", "source", "destination", "description", "icmp_type", "icmp_code"];
                assert!(keys.iter().all(|k| allowed.contains(&k.as_str())), "{name}.{dir}: {keys:?}\n{text}");
                rule_descriptions.push(rule["description"].as_str().map(str::to_owned));
            }
        }
    }
    assert_eq!(Some(rule_descriptions.len() as u64), report["rules"].as_u64(), "rules PyYAML reads vs the summary");

    // sgctl's own parser agrees.
    let checked = sgctl().args(["check", "--json"]).arg(out).output().expect("sgctl check");
    assert!(checked.status.success(), "sgctl check: {}\n{text}", String::from_utf8_lossy(&checked.stderr));
    let checked: Value = serde_json::from_slice(&checked.stdout).expect("check --json");
    assert_eq!(checked["groups"], report["groups"], "sgctl check vs the summary");
    assert_eq!(checked["rules"], report["rules"], "sgctl check vs the summary");
    (descriptions, rule_descriptions)
}

/// `sgctl import aws ARGS… -o OUT --json`: exit 0, the report.
fn import(args: &[&OsStr], out: &Path) -> Value {
    let run = sgctl().args(["import", "aws", "--json"]).args(args).arg("-o").arg(out).output().expect("sgctl");
    assert!(run.status.success(), "sgctl import aws: {}", String::from_utf8_lossy(&run.stderr));
    serde_json::from_slice(&run.stdout).expect("import --json")
}

#[test]
fn hostile_strings_in_every_field_stay_data() {
    let strings = hostile();
    let groups: Vec<Value> = strings
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let id = format!("sg-{i:017x}");
            json!({
                "GroupId": id, "GroupName": s, "Description": s, "VpcId": s, "OwnerId": s,
                "IpPermissions": [{
                    "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                    "IpRanges": [{"CidrIp": format!("10.{i}.0.0/16"), "Description": s}],
                    "Ipv6Ranges": [{"CidrIpv6": "2001:db8::/32", "Description": s}],
                    "PrefixListIds": [{"PrefixListId": "pl-0123456789abcdef0", "Description": s}],
                    "UserIdGroupPairs": [{"GroupId": "sg-0eeeeeeeeeeeeeeee", "Description": s,
                                          "UserId": s, "VpcId": s, "GroupName": s}]
                }],
                "IpPermissionsEgress": [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": s}]}]
            })
        })
        .collect();
    let rules = json!({"SecurityGroupRules": strings.iter().map(|s| json!({
        "GroupId": "sg-0ffffffffffffffff", "IsEgress": false, "IpProtocol": "udp", "FromPort": 53, "ToPort": 53,
        "CidrIpv4": "192.0.2.0/24", "Description": s
    })).collect::<Vec<_>>()});
    let enis = json!({"NetworkInterfaces": [{"NetworkInterfaceId": "eni-1", "PrivateIpAddress": "10.0.0.5",
        "Groups": [{"GroupId": "sg-0eeeeeeeeeeeeeeee", "GroupName": strings[0]}]}]});
    let entries = json!({"Entries": strings.iter().enumerate()
        .map(|(i, s)| json!({"Cidr": format!("10.200.{i}.0/24"), "Description": s})).collect::<Vec<_>>()});

    // File names are strings the output names too (in comments).
    let tmp = TempDir::new("hostile");
    let dir = tmp.path().join("dir\nevil: {x}\u{2028}#");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let write = |name: &str, v: &Value| {
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_vec(v).expect("JSON")).expect("write");
        path
    };
    let sgs = write("groups\n- evil.json", &json!({ "SecurityGroups": groups }));
    let sgr = write("rules.json", &rules);
    let eni = write("enis.json", &enis);
    let pl = write("pl\u{85}entries.json", &entries);
    let out = dir.join("out\npolicy.yaml");
    let pl_arg = format!("pl-0123456789abcdef0={}", pl.display());
    let report =
        import(&[sgs.as_os_str(), sgr.as_os_str(), eni.as_os_str(), "--prefix-list".as_ref(), pl_arg.as_ref()], &out);
    // Every group of the input, the rules' group and the referenced one.
    assert_eq!(report["groups"], strings.len() + 2, "{report}");
    assert_eq!(report["rules"], strings.len() * 5 + strings.len(), "{report}");

    let (descriptions, rule_descriptions) = read_back(&out, &report);
    for (i, s) in strings.iter().enumerate() {
        assert!(
            descriptions.values().any(|d| d.as_deref() == Some(kept(s).as_str())),
            "group {i}'s description did not survive: {s:?}\n{descriptions:#?}"
        );
        let same = rule_descriptions.iter().filter(|d| d.as_deref() == Some(kept(s).as_str())).count();
        // Five rules of its group, one of sg-0fff…'s; "" and " " are also
        // the descriptions of their neighbours' rules only by their own.
        assert!(same >= 6, "rule descriptions {s:?}: {same} of 6 survived");
    }
    // The prefix list kept every entry (their descriptions are comments).
    let doc = yaml_by_pyyaml(&out);
    assert_eq!(doc["prefix_lists"]["pl-0123456789abcdef0"].as_array().map(Vec::len), Some(strings.len()), "{doc:#}");
    assert_eq!(doc["members"]["sg-0eeeeeeeeeeeeeeee"], json!(["10.0.0.5/32"]), "{doc:#}");
}

#[test]
fn names_that_clash_get_unique_names() {
    // A GroupName that normalises to another group's name or is another
    // group's id: each group keeps a name of its own, references follow.
    let ids: Vec<String> = (1..=6).map(|i| format!("sg-{i:017x}")).collect();
    let names = ["default", "default", "Web Server", "web-server", "!!!", ids[4].as_str()];
    let groups: Vec<Value> = ids
        .iter()
        .zip(names)
        .map(|(id, name)| {
            json!({"GroupId": id, "GroupName": name, "Description": format!("{id} {name}"),
                   "IpPermissions": [{"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
                       "UserIdGroupPairs": [{"GroupId": ids[4]}]}],
                   "IpPermissionsEgress": []})
        })
        .collect();
    let tmp = TempDir::new("clash");
    let input = tmp.write("groups.json", &json!({ "SecurityGroups": groups }).to_string());
    let out = tmp.path().join("out.yaml");
    let report = import(&[input.as_os_str()], &out);
    assert_eq!(report["groups"], 6, "{report}");
    let (descriptions, _) = read_back(&out, &report);
    let by_description: BTreeMap<String, String> =
        descriptions.iter().map(|(name, d)| (d.clone().expect("a description"), name.clone())).collect();
    let name_of = |i: usize| by_description[&format!("{} {}", ids[i], names[i])].clone();
    assert_eq!(name_of(0), "default");
    assert_eq!(name_of(1), format!("default-{}", ids[1]));
    assert_eq!(name_of(2), "web-server");
    assert_eq!(name_of(3), format!("web-server-{}", ids[3]));
    // sg-…5 has no usable name: its id is its name, which sg-…6 asks for.
    assert_eq!(name_of(4), ids[4], "the group without a usable name keeps its id");
    assert_eq!(name_of(5), format!("{}-{}", ids[4], ids[5]));
    // Every reference names sg-…5 by the name it got.
    let doc = yaml_by_pyyaml(&out);
    for (name, g) in doc["groups"].as_object().expect("groups") {
        assert_eq!(g["inbound"][0]["source"], format!("sg:{}", ids[4]), "{name}");
    }
}

#[test]
fn real_describe_security_groups_json_from_moto_imports_as_data() {
    // What AWS's XML API can carry (no C0 control but tab, LF, CR).
    let strings: Vec<String> = hostile()
        .into_iter()
        .filter(|s| !s.is_empty() && !s.chars().any(|c| (c.is_control() && !"\t\n\r".contains(c)) || c >= '\u{fffe}'))
        .map(|s| s.chars().take(255).collect())
        .chain(["web".to_owned(), "Web".to_owned()])
        .collect();
    let tmp = TempDir::new("moto");
    let list = tmp.write("strings.json", &serde_json::to_string(&strings).expect("JSON"));
    let described = python("moto_security_groups.py", &[list.as_os_str()], "");
    let input = tmp.write("groups.json", &described);
    let doc: Value = serde_json::from_str(&described).expect("moto's JSON");
    let sgs = doc["SecurityGroups"].as_array().expect("SecurityGroups");
    assert_eq!(sgs.len(), strings.len(), "moto described every group");

    let out = tmp.path().join("out.yaml");
    let report = import(&[input.as_os_str()], &out);
    // One rule per range, prefix list and group pair, as the JSON holds them.
    let rules: usize = sgs
        .iter()
        .flat_map(|g| g["IpPermissions"].as_array().into_iter().chain(g["IpPermissionsEgress"].as_array()).flatten())
        .map(|p| {
            ["IpRanges", "Ipv6Ranges", "PrefixListIds", "UserIdGroupPairs"]
                .iter()
                .map(|k| p[*k].as_array().map_or(0, Vec::len))
                .sum::<usize>()
        })
        .sum();
    assert_eq!(report["groups"], sgs.len(), "{report}");
    assert_eq!(report["rules"], rules, "{report}");
    let (descriptions, _) = read_back(&out, &report);
    for g in sgs {
        let want = g["Description"].as_str().map(kept);
        assert!(descriptions.values().any(|d| *d == want), "{want:?} did not survive: {descriptions:#?}");
    }
}
