//! The enforcement thread (its own test binary: starting it is process-wide, and the
//! library's unit tests run guards on tokio's paused clock).

use std::time::Duration;

use gatehouse_session::enforcement_thread;

#[test]
fn guards_spawned_after_start_run_on_the_enforcement_thread_and_keep_time() {
    let main = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    main.block_on(async {
        // before `start`, a guard runs on the caller's runtime
        let here = std::thread::current().id();
        let ran_on = enforcement_thread::spawn(async { std::thread::current().id() })
            .await
            .expect("task");
        assert_eq!(ran_on, here);
    });
    assert!(!enforcement_thread::running());
    enforcement_thread::start().expect("enforcement thread");
    enforcement_thread::start().expect("a second start does nothing");
    assert!(enforcement_thread::running());
    main.block_on(async {
        // the main runtime is busy (blocked) when the guard's timer is due: the guard still
        // wakes on time, on its own thread
        let task = enforcement_thread::spawn(async {
            let due = tokio::time::Instant::now() + Duration::from_millis(50);
            tokio::time::sleep_until(due).await;
            let late = tokio::time::Instant::now() - due;
            (std::thread::current().name().map(str::to_owned), late)
        });
        std::thread::sleep(Duration::from_millis(400));
        let (name, late) = task.await.expect("guard task");
        assert_eq!(name.as_deref(), Some("gatehouse-enforcement"));
        assert!(
            late < Duration::from_millis(200),
            "woke {late:?} late although only the main runtime was busy"
        );
    });
}
