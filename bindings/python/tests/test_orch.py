"""Tests of the orchestration primitives through the binding: registry, balancer,
health and metrics, driven by a fake clock."""

import unittest

import aims
from aims_testutil import LeakCheckCase


class FakeClock:
    def __init__(self):
        self.ns = 1_000_000_000

    def __call__(self):
        return self.ns

    def advance_ms(self, ms):
        self.ns += int(ms * 1_000_000)


class TestRegistry(LeakCheckCase):
    def test_register_lookup_expire_and_watch(self):
        clock = FakeClock()
        events = []
        with aims.Registry(clock=clock) as reg:
            wid = reg.watch(lambda *ev: events.append(ev), service="infer", from_revision=0)
            a = reg.register("infer@1", "inproc://a", weight=2, ttl_ms=100)
            b = reg.register("infer@2", "tcp://127.0.0.1:5000", ttl_ms=1000)
            reg.register("train", "inproc://t", ttl_ms=1000)
            self.assertEqual(reg.lookup("infer"), [a, b])
            self.assertEqual(reg.lookup("infer@2"), [b])
            self.assertEqual(reg.address(b), "tcp://127.0.0.1:5000")
            self.assertEqual(reg.weight(a), 2)
            clock.advance_ms(100)  # a's lease ends exactly now
            self.assertEqual(reg.lookup("infer"), [b])
            with self.assertRaises(aims.AimsError) as cm:
                reg.heartbeat(a)
            self.assertEqual(cm.exception.code, aims.AIMS_E_NOTFOUND)
            reg.unwatch(wid)
            self.assertEqual([(e[1], e[2]) for e in events], [("put", a), ("put", b), ("expire", a)])
            revs = [e[0] for e in events]
            self.assertEqual(revs, sorted(revs))

    def test_bad_service_name(self):
        with aims.Registry() as reg:
            with self.assertRaises(aims.AimsError) as cm:
                reg.register("bad name!", "inproc://x")
            self.assertEqual(cm.exception.code, aims.AIMS_E_INVAL)


class TestPublish(LeakCheckCase):
    def test_publish_exactly_once(self):
        with aims.Registry() as reg, aims.Client() as cl:
            cl.use_registry(reg)
            cl.publish_version("fmnist", "3", "job-a", "acc=0.85")
            with self.assertRaises(aims.AimsError) as cm:
                reg.publish("fmnist", "3", "job-b")
            self.assertEqual(cm.exception.code, aims.AIMS_E_EXISTS)
            self.assertIn("fmnist@3 already published by job-a", str(cm.exception))
            self.assertEqual(reg.publication("fmnist", "3"), ("job-a", "acc=0.85"))
            with self.assertRaises(aims.AimsError) as cm:
                reg.publication("fmnist", "4")
            self.assertEqual(cm.exception.code, aims.AIMS_E_NOTFOUND)


class TestBalancerHealth(LeakCheckCase):
    def test_round_robin_rotates(self):
        with aims.Balancer("round_robin", seed=3) as lb:
            lb.set_instances([11, 12, 13])
            picks = [lb.pick() for _ in range(6)]
            for p in picks:
                lb.done(p, 1000)
            self.assertEqual(sorted(picks[:3]), [11, 12, 13])
            self.assertEqual(picks[:3], picks[3:])

    def test_unavailable_instance_not_picked(self):
        with aims.Balancer("p2c", seed=1) as lb:
            lb.set_instances([1, 2, 3, 4, 5])
            lb.set_available(3, False)
            for _ in range(200):
                p = lb.pick()
                self.assertNotEqual(p, 3)
                lb.done(p, 1000)
            self.assertEqual(lb.outstanding(1), 0)

    def test_health_ejects_after_failures(self):
        clock = FakeClock()
        changes = []
        with aims.Health(clock=clock, failures=3, eject_ms=1000, max_ejected_pct=50,
                         on_change=lambda *c: changes.append(c)) as h:
            for i in (1, 2, 3, 4):
                h.add(i)
            for _ in range(3):
                h.report(2, False)
            self.assertEqual(h.state(2), "ejected")
            self.assertFalse(h.in_panic)
            clock.advance_ms(1000)
            self.assertEqual(h.state(2), "healthy")
            self.assertEqual(changes, [(2, "healthy", "ejected"), (2, "ejected", "healthy")])
            self.assertIsNone(h.state(99))


class TestMetrics(LeakCheckCase):
    def test_counters_histograms_prometheus(self):
        with aims.Metrics() as mx:
            mx.count("aims_requests_total", 3, labels='service="infer"')
            mx.gauge("aims_inflight", 2.0)
            for us in range(1, 1001):
                mx.observe("aims_latency_ns", us * 1000)
            p50 = mx.quantile("aims_latency_ns", 0.5)
            self.assertLess(abs(p50 - 500_000) / 500_000, 0.05)
            text = mx.prometheus()
            self.assertIn('aims_requests_total{service="infer"} 3', text)
            self.assertIn("aims_latency_ns_count 1000", text)
            with self.assertRaises(aims.AimsError):
                mx.count("aims_latency_ns", 1)  # a histogram name used as a counter


if __name__ == "__main__":
    unittest.main()
