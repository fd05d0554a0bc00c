//! `sgctl publish FILE... --etcd URL`: one policy for the fleet. The files
//! are checked here as agents will check them (they parse, name no
//! interfaces, each group compiles), then put under `PREFIX/v1/policy` with
//! the next generation, by a transaction that succeeds only if nobody
//! published since it read the key (two publishers never share a
//! generation: the later one reads again and takes the next).
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde::Serialize;

use super::{
    layout::{self, Layout, PublishedPolicy, MAX_POLICY_BYTES},
    session::{timed, Connection},
};
use crate::{fleet::EtcdArgs, state::records::Source, timings::unix_now, InputError};

/// What `sgctl publish` did.
#[derive(Clone, Debug, Serialize)]
pub struct Published {
    pub key: String,
    pub generation: u64,
    /// The etcd revision of the put.
    pub revision: i64,
    pub groups: usize,
    pub prefix_lists: usize,
    pub files: Vec<String>,
}

/// Checks `files` and publishes them as the next generation.
pub fn publish(args: &EtcdArgs, files: &[PathBuf]) -> anyhow::Result<Published> {
    let texts = crate::policy::read_files(files)?;
    let sources: Vec<Source> = texts.into_iter().map(|(path, text)| Source { path, text }).collect();
    let parsed = layout::check_policy(&sources)?;
    let layout = Layout::new(&args.etcd_prefix).map_err(InputError::EtcdOptions)?;
    let connection = Connection::new(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a runtime")?;
    let (generation, revision) = runtime.block_on(put_next(&connection, &layout, &sources))?;
    Ok(Published {
        key: layout.policy(),
        generation,
        revision,
        groups: parsed.groups.len(),
        prefix_lists: parsed.prefix_lists.len(),
        files: sources.into_iter().map(|s| s.path).collect(),
    })
}

/// Puts `sources` as the generation after the one published, retrying when
/// another publisher got there first; returns (generation, revision).
async fn put_next(connection: &Connection, layout: &Layout, sources: &[Source]) -> anyhow::Result<(u64, i64)> {
    let mut client = connection.connect(&layout.policy()).await?;
    let key = layout.policy();
    for _ in 0..10 {
        let read = timed("reading the published policy", client.get(key.clone(), None)).await?;
        let (generation, modified) = match read.kvs().first() {
            None => (0, 0),
            Some(kv) => (generation_of(&key, kv.value())?, kv.mod_revision()),
        };
        let next = PublishedPolicy { generation: generation + 1, published_at: unix_now(), sources: sources.to_vec() };
        let value = serde_json::to_vec(&next)?;
        if value.len() > MAX_POLICY_BYTES {
            return Err(InputError::EtcdOptions(format!(
                "the policy is {} bytes published, over the limit of {MAX_POLICY_BYTES}: apply it from files on each host",
                value.len()
            ))
            .into());
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, modified)])
            .and_then([TxnOp::put(key.clone(), value, None)]);
        let done = timed("publishing the policy", client.txn(txn)).await?;
        if done.succeeded() {
            return Ok((next.generation, done.header().map_or(0, etcd_client::ResponseHeader::revision)));
        }
    }
    bail!("{key} kept changing while publishing (another publisher?): try again")
}

/// The generation of what is published at `key`, read leniently: a value
/// agents would refuse still says which generation comes next.
fn generation_of(key: &str, value: &[u8]) -> anyhow::Result<u64> {
    let value: serde_json::Value = serde_json::from_slice(value).unwrap_or_default();
    value.get("generation").and_then(serde_json::Value::as_u64).ok_or_else(|| {
        InputError::EtcdOptions(format!(
            "{key} holds something that is not a published policy: look at it (etcdctl get {key}), and delete it \
             to start again at generation 1"
        ))
        .into()
    })
}
