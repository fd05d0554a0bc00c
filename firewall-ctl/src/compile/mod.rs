//! Placeholder: the compiler from policy to map entries goes here.
