//! Side futures of a connection's task (its idle or release timer, the
//! drain signal), polled only after one of them woke the task. A
//! connection's own wake-ups, several per request, would otherwise poll a
//! timer and a watch channel's waiter list each time, as `tokio::select!`
//! does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake, Waker};

use futures_util::task::AtomicWaker;

/// The waker given to a connection's side futures: it notes that one of
/// them woke, then wakes the task.
pub struct SideWake {
    shared: Arc<SideWakeShared>,
    waker: Waker,
    /// The task waker last registered.
    registered: Option<Waker>,
}

struct SideWakeShared {
    woke: AtomicBool,
    task: AtomicWaker,
}

impl Wake for SideWakeShared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woke.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl SideWake {
    pub fn new() -> SideWake {
        let shared = Arc::new(SideWakeShared {
            // Polled once at the start, to register.
            woke: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        SideWake {
            waker: Waker::from(shared.clone()),
            shared,
            registered: None,
        }
    }

    /// A context for polling the side futures when one of them woke since
    /// they were last polled; `None` otherwise (an atomic load and a
    /// pointer comparison). A side wake takes the registered task waker, so
    /// it is registered again after every side wake, before the side
    /// futures are polled.
    pub fn woken(&mut self, cx: &Context<'_>) -> Option<Context<'_>> {
        let woke = self.shared.woke.load(Ordering::Relaxed)
            && self.shared.woke.swap(false, Ordering::AcqRel);
        let registered = self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if woke || !registered {
            self.shared.task.register(cx.waker());
            self.registered = Some(cx.waker().clone());
        }
        woke.then(|| Context::from_waker(&self.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::{Future, poll_fn};
    use std::pin::pin;
    use std::task::Poll;
    use std::time::Duration;

    /// A side wake takes the task's registered waker; one lost there would
    /// leave every later side wake unheard.
    #[tokio::test(start_paused = true)]
    async fn every_side_wake_reaches_the_task() {
        let mut side = SideWake::new();
        let mut timer = pin!(tokio::time::sleep(Duration::from_secs(1)));
        let mut ticks = 0;
        let ticking = poll_fn(|cx| {
            let Some(mut side_cx) = side.woken(cx) else {
                return Poll::Pending;
            };
            while timer.as_mut().poll(&mut side_cx).is_ready() {
                ticks += 1;
                if ticks == 3 {
                    return Poll::Ready(());
                }
                let next = tokio::time::Instant::now() + Duration::from_secs(1);
                timer.as_mut().reset(next);
            }
            Poll::Pending
        });
        tokio::time::timeout(Duration::from_secs(60), ticking)
            .await
            .expect("a side wake was lost");
    }
}
