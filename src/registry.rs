//! Hooks declared with the attribute macros, and how they reach a [`Builder`]: explicitly with
//! [`hooks!`](crate::hooks), or all at once with [`Builder::registered_hooks`].
//!
//! The global list is a `linkme` distributed slice: every `#[on_exit]` (and so on) adds a
//! `Registration` to it, and the linker gathers them into one array. Nothing runs before
//! `main`, and reading the list is reading a `&'static [Registration]`.

use crate::BoxError;
use crate::builder::Builder;
use crate::hook::HookSpec;
use crate::outcome::IntoHookResult;

/// Every hook declared with an attribute macro (and not `global = false`) in the crates linked
/// into the binary, in link order.
#[linkme::distributed_slice]
pub static HOOKS: [Registration];

/// One hook in `HOOKS`: where it was declared, and how to build it.
#[derive(Debug)]
pub struct Registration {
    /// `module_path!()` where the hook was declared.
    pub module: &'static str,
    /// `line!()` of the attribute.
    pub line: u32,
    /// The function's name.
    pub function: &'static str,
    /// Builds the hook; the same function `hooks![..]` calls.
    pub spec: fn() -> HookSpec,
}

/// A function marked with a hook attribute. The attribute implements it for a hidden struct
/// named like the function; [`hooks!`](crate::hooks) calls it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a hook function",
    label = "not marked with a hook attribute",
    note = "`hooks![..]` takes the names of functions marked `#[on_startup]`, `#[on_stop_intake]`, `#[on_shutdown]`, `#[on_exit]` or `#[hook(phase = \"...\")]`; add a closure hook with `Builder::on_exit(\"name\", |ctx| ..)` instead"
)]
pub trait MacroHook {
    /// The hook, ready for [`Builder::hook`].
    fn spec() -> HookSpec;
}

/// Turns a hook function's return value into the hook's result. The macros call it at the
/// function's return type, so that a return type that does not fit is reported there.
pub fn hook_result<R: IntoHookResult>(value: R) -> Result<(), BoxError> {
    value.into_hook_result()
}

impl Builder {
    /// Adds every hook declared with an attribute macro in the crates linked into this binary
    /// (except those marked `global = false`).
    ///
    /// They are added in a fixed order that does not depend on the linker: by module path, then
    /// in source order within a module. (Exit-side phases run their hooks in reverse order of
    /// registration unless `after`/`before` say otherwise; name the order you rely on.)
    ///
    /// A hook added both here and explicitly, with [`hooks!`](crate::hooks), is one hook and
    /// runs once, in the place of its first registration.
    ///
    /// # Linking
    ///
    /// The list is assembled by the linker, from the crates that end up in the binary. A crate
    /// that the binary never refers to is not linked, and its hooks are silently missing. If a
    /// crate exists only for its hooks, refer to it from the binary:
    ///
    /// ```text
    /// use my_telemetry_hooks as _; // links the crate, and so its hooks
    /// ```
    ///
    /// # Examples
    ///
    /// ```
    /// use lifecycle_hooks::{on_exit, on_shutdown, testing};
    ///
    /// #[on_shutdown]
    /// async fn announce() {}
    ///
    /// #[on_exit]
    /// fn close_files() {}
    ///
    /// #[on_exit(global = false)]
    /// fn only_when_asked() {}
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let recorder = testing::Recorder::new();
    /// let lifecycle = testing::builder()
    ///     .registered_hooks()
    ///     .observe(recorder.observer())
    ///     .build()
    ///     .expect("a valid graph");
    /// lifecycle.handle().stop();
    /// let outcome = lifecycle.run().await;
    /// assert!(outcome.hook("announce").is_some());
    /// assert!(outcome.hook("close_files").is_some());
    /// assert!(outcome.hook("only_when_asked").is_none());
    /// assert!(recorder.before("hook shutdown announce ok", "hook exit close_files ok"));
    /// # }
    /// ```
    pub fn registered_hooks(self) -> Self {
        let mut registered: Vec<&Registration> = HOOKS.iter().collect();
        registered.sort_by_key(|r| (r.module, r.line, r.function));
        self.hooks(registered.into_iter().map(|r| (r.spec)()))
    }
}

/// Adds a hook to `HOOKS`; the attribute macros expand to it unless `global = false`.
///
/// A `macro_rules!` rather than generated tokens, so that every linkme path is a `$crate` path.
#[doc(hidden)]
#[macro_export]
macro_rules! __lifecycle_hooks_register {
    ($hook:ident, $function:literal) => {
        const _: () = {
            #[$crate::__private::linkme::distributed_slice($crate::__private::HOOKS)]
            #[linkme(crate = $crate::__private::linkme)]
            static REGISTRATION: $crate::__private::Registration =
                $crate::__private::Registration {
                    module: ::core::module_path!(),
                    line: ::core::line!(),
                    function: $function,
                    spec: <$hook as $crate::__private::MacroHook>::spec,
                };
        };
    };
}

/// The hooks declared by functions marked with a hook attribute, as a `Vec<HookSpec>` for
/// [`Builder::hooks`].
///
/// Each argument is the path of such a function (`close_producer`, `telemetry::flush`). Use it
/// to pick hooks explicitly, in tests or in a scoped setup; [`Builder::registered_hooks`] takes
/// them all. A hook added both ways runs once.
///
/// # Examples
///
/// ```
/// use lifecycle_hooks::{hooks, on_exit, testing};
///
/// mod telemetry {
///     #[lifecycle_hooks::on_exit]
///     pub async fn flush(ctx: lifecycle_hooks::HookContext) {
///         assert_eq!(ctx.name(), "flush");
///     }
/// }
///
/// #[on_exit(after = flush)]
/// async fn close_producer() -> Result<(), std::io::Error> {
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let recorder = testing::Recorder::new();
/// let lifecycle = testing::builder()
///     .hooks(hooks![close_producer, telemetry::flush])
///     .observe(recorder.observer())
///     .build()
///     .expect("a valid graph");
/// lifecycle.handle().stop();
/// assert_eq!(lifecycle.run().await.exit_code(), 0);
/// assert!(recorder.before("hook exit flush ok", "hook exit close_producer ok"));
/// # }
/// ```
#[macro_export]
macro_rules! hooks {
    ($($hook:path),* $(,)?) => {{
        let hooks: $crate::__private::Vec<$crate::HookSpec> =
            $crate::__private::vec![$(<$hook as $crate::__private::MacroHook>::spec()),*];
        hooks
    }};
}
