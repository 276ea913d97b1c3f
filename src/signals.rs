//! Operating-system signals and what each one means. See [`Signals`].

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use futures::StreamExt;
use parking_lot::Mutex;
use signal_hook::consts::signal as sig;

/// A Unix signal the lifecycle can react to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// `SIGTERM`
    Term,
    /// `SIGINT`
    Int,
    /// `SIGQUIT`
    Quit,
    /// `SIGHUP`
    Hup,
    /// `SIGUSR1`
    Usr1,
    /// `SIGUSR2`
    Usr2,
    /// `SIGTSTP`
    Tstp,
    /// `SIGTTIN`
    Ttin,
}

impl Signal {
    const ALL: [Signal; 8] = [
        Signal::Term,
        Signal::Int,
        Signal::Quit,
        Signal::Hup,
        Signal::Usr1,
        Signal::Usr2,
        Signal::Tstp,
        Signal::Ttin,
    ];

    /// The signal's number on this platform.
    pub fn number(self) -> i32 {
        match self {
            Signal::Term => sig::SIGTERM,
            Signal::Int => sig::SIGINT,
            Signal::Quit => sig::SIGQUIT,
            Signal::Hup => sig::SIGHUP,
            Signal::Usr1 => sig::SIGUSR1,
            Signal::Usr2 => sig::SIGUSR2,
            Signal::Tstp => sig::SIGTSTP,
            Signal::Ttin => sig::SIGTTIN,
        }
    }

    /// The signal with this number, if it is one this crate knows.
    pub fn from_number(number: i32) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.number() == number)
    }

    /// The conventional name: `SIGTERM`, `SIGUSR2`, ...
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Int => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Hup => "SIGHUP",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
            Signal::Tstp => "SIGTSTP",
            Signal::Ttin => "SIGTTIN",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a signal asks the lifecycle to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// A graceful stop; while stopping, a further one escalates.
    Stop,
    /// A graceful restart: the stop path, ending with the restart status.
    Restart,
    /// Stop intake and keep running until a stop or restart (Sidekiq's quiet).
    Quiet,
    /// Log the state: phase, in-flight work, pending hooks, time left.
    DumpState,
}

/// Which signals the lifecycle listens to and what each one means.
///
/// | signal | default action |
/// |---|---|
/// | `SIGTERM`, `SIGINT` | [`Action::Stop`] |
/// | `SIGUSR2` | [`Action::Restart`] |
/// | `SIGTSTP` | [`Action::Quiet`] |
/// | `SIGTTIN` | [`Action::DumpState`] |
///
/// [`Signals::none()`] keeps the map but installs no OS handler: for embedding in a process that
/// owns its signals, and for tests, which deliver signals with
/// [`LifecycleHandle::trigger`](crate::LifecycleHandle::trigger).
///
/// ```
/// use lifecycle_hooks::{Action, Signal, Signals};
///
/// let signals = Signals::default().with(Signal::Hup, Action::Restart).without(Signal::Tstp);
/// assert_eq!(signals.action(Signal::Hup), Some(Action::Restart));
/// assert_eq!(signals.action(Signal::Tstp), None);
/// assert_eq!(signals.action(Signal::Term), Some(Action::Stop));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signals {
    map: Vec<(Signal, Action)>,
    listen: bool,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            map: vec![
                (Signal::Term, Action::Stop),
                (Signal::Int, Action::Stop),
                (Signal::Usr2, Action::Restart),
                (Signal::Tstp, Action::Quiet),
                (Signal::Ttin, Action::DumpState),
            ],
            listen: true,
        }
    }
}

impl Signals {
    /// The default map, with no OS signal handler installed.
    pub fn none() -> Self {
        Signals {
            listen: false,
            ..Signals::default()
        }
    }

    /// Maps `signal` to `action`, replacing what it meant before.
    #[must_use]
    pub fn with(mut self, signal: Signal, action: Action) -> Self {
        self.map.retain(|(s, _)| *s != signal);
        self.map.push((signal, action));
        self
    }

    /// Stops reacting to `signal` (its OS default applies again).
    #[must_use]
    pub fn without(mut self, signal: Signal) -> Self {
        self.map.retain(|(s, _)| *s != signal);
        self
    }

    /// What `signal` means, if anything.
    pub fn action(&self, signal: Signal) -> Option<Action> {
        self.map
            .iter()
            .find(|(s, _)| *s == signal)
            .map(|(_, action)| *action)
    }

    /// Whether OS signal handlers are installed.
    pub fn listens(&self) -> bool {
        self.listen
    }

    /// Installs the OS handlers and returns the listener that calls `deliver` with each signal;
    /// dropping it removes the handlers and gives the signals their default action back (unless
    /// another lifecycle of this process still listens).
    pub(crate) fn listen(
        &self,
        deliver: impl Fn(Signal) + Send + 'static,
    ) -> std::io::Result<Option<Listener>> {
        if !self.listen || self.map.is_empty() {
            return Ok(None);
        }
        let numbers: Vec<i32> = self.map.iter().map(|(s, _)| s.number()).collect();
        let active = Active::enter(&numbers)?;
        let mut stream = signal_hook_tokio::Signals::new(&numbers)?;
        let stream_handle = stream.handle();
        let task = tokio::spawn(async move {
            while let Some(number) = stream.next().await {
                if let Some(signal) = Signal::from_number(number) {
                    deliver(signal);
                }
            }
        });
        Ok(Some(Listener {
            task,
            stream: stream_handle,
            _active: active,
        }))
    }
}

/// The running signal listener. Dropping it stops the task, unregisters its handlers and, once
/// no listener of this process is left, restores each signal's default action.
#[derive(Debug)]
pub(crate) struct Listener {
    task: tokio::task::JoinHandle<()>,
    stream: signal_hook_tokio::Handle,
    _active: Active,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stream.close();
        self.task.abort();
    }
}

/// The process-wide "default action" switch: signal-hook keeps its low-level handler installed
/// for the life of the process, so a signal that arrives after the last listener is gone would
/// otherwise be swallowed. Each handled signal gets, once per process, a conditional action that
/// runs the signal's default (terminate, stop, ...) while `DEFAULT_NOW` is true.
struct Restore {
    /// How many listeners are active, and which signals have the conditional default registered.
    /// Locked only to enter or leave; never across an await.
    state: Mutex<(usize, HashSet<i32>)>,
    /// True while no listener is active: read (SeqCst) inside the signal handler.
    default_now: Arc<AtomicBool>,
}

static RESTORE: LazyLock<Restore> = LazyLock::new(|| Restore {
    state: Mutex::new((0, HashSet::new())),
    default_now: Arc::new(AtomicBool::new(true)),
});

/// One active listener's share of the switch; dropping it may restore the defaults.
#[derive(Debug)]
struct Active;

impl Active {
    fn enter(numbers: &[i32]) -> std::io::Result<Active> {
        let restore = &*RESTORE;
        let mut state = restore.state.lock();
        for &number in numbers {
            if !state.1.contains(&number) {
                signal_hook::flag::register_conditional_default(
                    number,
                    Arc::clone(&restore.default_now),
                )?;
                state.1.insert(number);
            }
        }
        state.0 += 1;
        // SeqCst: a handler running after this store must not take the default action.
        restore.default_now.store(false, Ordering::SeqCst);
        Ok(Active)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let restore = &*RESTORE;
        let mut state = restore.state.lock();
        state.0 -= 1;
        if state.0 == 0 {
            // SeqCst: from here on a signal takes its default action, as before any listener.
            restore.default_now.store(true, Ordering::SeqCst);
        }
    }
}
