//! Host tier: the load generator (`libraflux_tests::load`) itself, client in the left namespace
//! of a veth pair and servers in the right one, no load balancer between: every kind of load is
//! answered while the servers run, long-lived connections reopen when their lifetime ends, and
//! once the servers die every kind records the failure it meets.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use libraflux_tests::{
    VethPair,
    load::{Event, Failure, Kind, Load, LoadPlan, Outcome, Server, Session, Tally},
};

fn at(port: u16) -> SocketAddr {
    SocketAddr::new(VethPair::RIGHT_V4.parse().unwrap(), port)
}

fn plan() -> LoadPlan {
    LoadPlan {
        tcp: at(8080),
        udp: at(5300),
        long_lived: vec![at(8081); 2],
        request_workers: 1,
        request_every: Duration::from_millis(50),
        exchange_every: Duration::from_millis(100),
        lifetime: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
    }
}

fn of(events: &[Event], kind: Kind) -> Tally {
    Tally::of(events.iter().filter(|event| event.kind == kind))
}

#[test]
fn every_kind_of_load_is_answered_and_long_lived_connections_reopen() {
    let pair = VethPair::new();
    let servers = [Server::tcp(&pair.right, at(8080)), Server::tcp(&pair.right, at(8081))];
    let _udp = Server::udp(&pair.right, at(5300));
    let load = Load::start(&pair.left, &plan());
    let deadline = Instant::now() + Duration::from_millis(900);
    while load.sessions().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let sessions = load.sessions();
    assert_eq!(sessions.len(), 2, "both long-lived connections are open: {sessions:?}");
    assert!(sessions.iter().all(|session| session.backend == at(8081) && session.ends > Instant::now()));
    std::thread::sleep(Duration::from_secs(3));
    // Between two sessions a slot is empty for up to one exchange interval: look a few times.
    let first_end = sessions.iter().map(|session| session.ends).max().unwrap();
    let reopened = |now: &[Session]| now.len() == 2 && now.iter().all(|session| session.ends > first_end);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !reopened(&load.sessions()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let now = load.sessions();
    assert!(
        reopened(&now),
        "both connections ended their lifetime and opened again: {sessions:?} then {now:?}"
    );
    let events = load.stop();
    drop(servers);

    for kind in Kind::ALL {
        let tally = of(&events, kind);
        assert!(tally.sent > 10, "{kind:?}: {tally:?}");
        assert_eq!(tally.lost(), 0, "{kind:?}: {tally:?}");
    }
    let answered_by = |kind, port| {
        events
            .iter()
            .filter(|event| event.kind == kind)
            .all(|event| matches!(event.outcome, Outcome::Answered { backend, .. } if backend == at(port)))
    };
    assert!(answered_by(Kind::TcpRequest, 8080) && answered_by(Kind::UdpRequest, 5300));
    assert!(answered_by(Kind::LongLived, 8081));
}

#[test]
fn dead_servers_show_as_refused_requests_and_cut_connections() {
    let pair = VethPair::new();
    let servers = [Server::tcp(&pair.right, at(8080)), Server::tcp(&pair.right, at(8081))];
    let udp = Server::udp(&pair.right, at(5300));
    let load = Load::start(&pair.left, &LoadPlan { lifetime: Duration::from_secs(60), ..plan() });
    std::thread::sleep(Duration::from_millis(500));
    let died = Instant::now();
    for server in servers {
        server.stop();
    }
    udp.stop();
    std::thread::sleep(Duration::from_secs(1));
    let events = load.stop();

    let after: Vec<Event> = events.iter().filter(|event| event.at > died).copied().collect();
    let refused = |kind| {
        after.iter().any(|event| event.kind == kind && event.outcome == Outcome::Failed(Failure::Refused))
    };
    assert!(refused(Kind::TcpRequest), "TCP requests to a closed port are refused: {after:?}");
    assert!(refused(Kind::UdpRequest), "UDP requests to a closed port are refused (ICMP): {after:?}");
    let cut = of(&events, Kind::LongLived).cut;
    assert_eq!(cut, 2, "each long-lived connection is cut once, then cannot reopen: {events:?}");
    assert!(refused(Kind::LongLived), "reopening a long-lived connection is refused");
}
