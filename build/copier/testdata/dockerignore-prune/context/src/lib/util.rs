src/lib/util.rs
