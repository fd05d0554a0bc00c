//! Policies from other tools' descriptions of security groups. Each importer
//! is a pure function from their text to policy YAML (policy-format.md);
//! the `sgctl import` verb only reads files and prints.

pub mod aws;
