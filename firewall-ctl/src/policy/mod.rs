//! Placeholder: the policy model and YAML parser go here.
