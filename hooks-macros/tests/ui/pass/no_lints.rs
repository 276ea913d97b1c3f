// The generated code raises none of the lints the workspace enables.
#![deny(
    warnings,
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    unsafe_code,
    non_camel_case_types,
    dead_code,
    unused
)]
//! A crate whose public hooks are documented, and whose private ones are used.

use lifecycle_hooks::{hooks, on_exit, on_shutdown};

/// Closes the producer.
#[on_exit]
pub async fn close_producer() {}

#[on_shutdown]
async fn announce() {}

mod private {
    #[lifecycle_hooks::on_exit(global = false)]
    pub(crate) fn close_files() {}
}

fn main() {
    let _ = lifecycle_hooks::testing::builder()
        .hooks(hooks![close_producer, announce, private::close_files])
        .build();
}
