//! Operating-system signals and what each one means. See [`Signals`].

use std::fmt;

use futures::StreamExt;
use signal_hook::consts::signal as sig;

use crate::handle::LifecycleHandle;

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

    /// Installs the OS handlers and returns a task that delivers each signal to `handle`.
    pub(crate) fn listen(
        &self,
        handle: LifecycleHandle,
    ) -> std::io::Result<Option<tokio::task::JoinHandle<()>>> {
        if !self.listen || self.map.is_empty() {
            return Ok(None);
        }
        let numbers: Vec<i32> = self.map.iter().map(|(s, _)| s.number()).collect();
        let mut stream = signal_hook_tokio::Signals::new(&numbers)?;
        Ok(Some(tokio::spawn(async move {
            while let Some(number) = stream.next().await {
                if let Some(signal) = Signal::from_number(number) {
                    handle.trigger(signal);
                }
            }
        })))
    }
}
