// `sqlx::migrate!` embeds the read tables' migrations (the workspace's `migrations/` folder) at
// compile time: a new or changed one must rebuild.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
