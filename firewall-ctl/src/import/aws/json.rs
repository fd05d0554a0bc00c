//! The JSON documents of the `aws ec2` commands the importer reads, as the
//! AWS CLI prints them (PascalCase keys). Only the fields the import uses
//! are declared; other fields inside a record are ignored, because AWS adds
//! fields over time. The top level is strict: a document of another command
//! (`describe-instances`, say) is an error, not an empty import.

use serde::{Deserialize, Deserializer};

/// One input file: any of the known top-level keys, so the outputs of
/// several commands may also be merged into one document.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Document {
    /// `describe-security-groups`.
    pub security_groups: Option<Vec<SecurityGroup>>,
    /// `describe-security-group-rules`.
    pub security_group_rules: Option<Vec<SecurityGroupRule>>,
    /// `describe-network-interfaces`: who carries each group.
    pub network_interfaces: Option<Vec<NetworkInterface>>,
    /// `get-managed-prefix-list-entries` prints only `Entries`; which list
    /// they belong to comes from `--prefix-list ID=FILE` or this key.
    pub prefix_list_id: Option<String>,
    pub entries: Option<Vec<PrefixListEntry>>,
    /// Present when the output was paginated by hand; nothing to import.
    #[serde(rename = "NextToken")]
    pub _next_token: Option<serde_json::Value>,
}

/// The top-level keys [`Document`] knows, for messages.
pub const KNOWN_KEYS: &str = "SecurityGroups, SecurityGroupRules, NetworkInterfaces, Entries (with PrefixListId)";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SecurityGroup {
    pub group_id: String,
    pub group_name: Option<String>,
    pub description: Option<String>,
    pub vpc_id: Option<String>,
    pub owner_id: Option<String>,
    #[serde(default)]
    pub ip_permissions: Vec<IpPermission>,
    /// Absent only for EC2-Classic groups, which had no egress rules.
    pub ip_permissions_egress: Option<Vec<IpPermission>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpPermission {
    pub ip_protocol: String,
    #[serde(default, deserialize_with = "whole_number")]
    pub from_port: Option<i64>,
    #[serde(default, deserialize_with = "whole_number")]
    pub to_port: Option<i64>,
    #[serde(default)]
    pub ip_ranges: Vec<IpRange>,
    #[serde(default)]
    pub ipv6_ranges: Vec<Ipv6Range>,
    #[serde(default)]
    pub prefix_list_ids: Vec<PrefixListId>,
    #[serde(default)]
    pub user_id_group_pairs: Vec<UserIdGroupPair>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpRange {
    pub cidr_ip: String,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipv6Range {
    pub cidr_ipv6: String,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PrefixListId {
    pub prefix_list_id: String,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserIdGroupPair {
    /// Absent only in old default-VPC output that names the group instead.
    pub group_id: Option<String>,
    pub group_name: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SecurityGroupRule {
    pub group_id: String,
    pub is_egress: bool,
    pub ip_protocol: String,
    #[serde(default, deserialize_with = "whole_number")]
    pub from_port: Option<i64>,
    #[serde(default, deserialize_with = "whole_number")]
    pub to_port: Option<i64>,
    pub cidr_ipv4: Option<String>,
    pub cidr_ipv6: Option<String>,
    pub prefix_list_id: Option<String>,
    pub referenced_group_info: Option<ReferencedGroup>,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReferencedGroup {
    pub group_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInterface {
    pub network_interface_id: Option<String>,
    #[serde(default)]
    pub groups: Vec<GroupIdentifier>,
    /// The primary address; also listed in `private_ip_addresses`.
    pub private_ip_address: Option<String>,
    #[serde(default)]
    pub private_ip_addresses: Vec<PrivateIpAddress>,
    #[serde(default)]
    pub ipv6_addresses: Vec<Ipv6Address>,
    #[serde(default)]
    pub ipv4_prefixes: Vec<Ipv4Prefix>,
    #[serde(default)]
    pub ipv6_prefixes: Vec<Ipv6Prefix>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GroupIdentifier {
    pub group_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PrivateIpAddress {
    pub private_ip_address: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipv6Address {
    pub ipv6_address: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipv4Prefix {
    pub ipv4_prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipv6Prefix {
    pub ipv6_prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PrefixListEntry {
    pub cidr: String,
    pub description: Option<String>,
}

/// `FromPort`/`ToPort`: a JSON integer (or null). Its own visitor so that a
/// wrong value reads "expected a whole number", not serde's "expected i64".
fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Option<i64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number")
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v).map(Some).map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(Visitor)
}
