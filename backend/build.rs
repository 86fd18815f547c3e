// `sqlx::migrate!` (src/schema.rs) embeds the bank's tables' migrations (the workspace's
// `migrations/` folder) at compile time: a new or changed one must rebuild this crate.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
