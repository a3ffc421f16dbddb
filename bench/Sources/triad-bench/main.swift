// triad-bench: the measuring side of bench/pipeline.sh. Three cases, each printing
// one JSON line on stdout:
//   mqtt-ceiling  — one subscriber's receive rate from Mosquitto (QoS 1 flood from one publisher)
//   amqp-ceiling  — RabbitMQ's confirmed publish rate (batches, as Triad's forwarder sends)
//   pipeline      — probe → MQTT → Triad → AMQP → an integrator's queue: samples carry their
//                   send time and sequence; reports sent, received, lost, duplicates, p50/p99
// (mqtt-ceiling and pipeline also report `cpuSeconds`, the CPU time the process used)
// and one for bench/replicas.sh:
//   propagation   — a write on one replica until another reads it: writes a resource on --write,
//                   reads it on --read until its resourceVersion shows; reports p50/p99/max
import Foundation
import NIOHTTP1
import TriadAMQP
import TriadClient
import TriadCore
import TriadMQTT

struct Failure: Error, CustomStringConvertible { var description: String }

func argument(_ name: String, _ fallback: String? = nil) throws -> String {
    let args = CommandLine.arguments
    if let i = args.firstIndex(of: "--\(name)"), i + 1 < args.count { return args[i + 1] }
    if let fallback { return fallback }
    throw Failure(description: "missing --\(name)")
}

func nowMs() -> Double { Date().timeIntervalSince1970 * 1000 }

func emit(_ object: [String: JSONValue]) {
    print(String(decoding: JSONCoding.encode(JSONValue.object(object)), as: UTF8.self))
}

/// This process's CPU time (user + system), in seconds: the pipeline's CPU budget per sample
/// counts the probe and the integrator too, since they share the machine with the pipeline.
func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

func mqttCeiling() async throws {
    let endpoint = try MQTTEndpoint(url: try argument("mqtt"))
    let count = Int(try argument("messages", "100000"))!
    let topic = "bench/ceiling/\(UUID().uuidString.prefix(8))"
    let subscriber = try MQTTClient(endpoint: endpoint, subscriptions: [topic], byteBudget: (count + 10) * 128)
    try subscriber.start()
    guard await subscriber.waitUntilReady(timeout: .seconds(10)) else { throw Failure(description: "subscriber not ready") }
    let publisher = try MQTTClient(endpoint: endpoint)
    try publisher.start()
    guard await publisher.waitUntilReady(timeout: .seconds(10)) else { throw Failure(description: "publisher not ready") }
    let payload = Array(#"{"values":{"temperature":21.5,"humidity":40}}"#.utf8)
    let reader = Task { () -> (Int, Double, Double) in
        var n = 0
        var first = 0.0
        var last = 0.0
        for await _ in subscriber.messages {
            if n == 0 { first = nowMs() }
            n += 1
            last = nowMs()
            if n == count { break }
        }
        return (n, first, last)
    }
    for _ in 0..<count {
        while (try? publisher.publish(topic: topic, payload: payload)) == nil { try await Task.sleep(for: .milliseconds(1)) }
    }
    let timeout = Task {
        try await Task.sleep(for: .seconds(60))
        subscriber.stop()
    }
    let (received, first, last) = await reader.value
    timeout.cancel()
    publisher.stop()
    subscriber.stop()
    let seconds = max(0.001, (last - first) / 1000)
    emit([
        "case": .string("mqtt-ceiling"), "messages": .number(Double(received)), "seconds": .number(seconds),
        "perSecond": .number((Double(received) / seconds).rounded()),
        "cpuSeconds": .number((cpuSeconds() * 1000).rounded() / 1000),
    ])
}

func amqpCeiling() async throws {
    let endpoint = try AMQPEndpoint(url: try argument("amqp"))
    let count = Int(try argument("messages", "100000"))!
    let batch = Int(try argument("batch", "1000"))!
    let publisher = AMQPPublisher(endpoint: endpoint)
    try await publisher.connect()
    try await publisher.declareTopicExchange("triad.bench")
    let body = Array(#"{"specversion":"1.0","type":"io.triad.telemetry","data":{"values":{"temperature":21.5}}}"#.utf8)
    let start = nowMs()
    var sent = 0
    while sent < count {
        let n = min(batch, count - sent)
        try await publisher.publishConfirmed(
            (0..<n).map { i in
                AMQPMessage(exchange: "triad.bench", routingKey: "device.bench.telemetry", body: body, messageID: String(sent + i))
            })
        sent += n
    }
    let seconds = (nowMs() - start) / 1000
    publisher.close()
    emit([
        "case": .string("amqp-ceiling"), "messages": .number(Double(sent)), "seconds": .number(seconds),
        "perSecond": .number((Double(sent) / seconds).rounded()), "batch": .number(Double(batch)),
    ])
}

/// Publishes `rate` samples/s for `seconds` over `devices` resources named `<prefix>-<i>`, and
/// consumes them from a queue bound to their telemetry routing keys.
func pipeline() async throws {
    let mqtt = try MQTTEndpoint(url: try argument("mqtt"))
    let amqp = try AMQPEndpoint(url: try argument("amqp"))
    let prefix = try argument("prefix", "bench")
    let devices = Int(try argument("devices", "50"))!
    let rate = Double(try argument("rate"))!
    let seconds = Double(try argument("seconds", "10"))!
    let drain = Double(try argument("drain", "5"))!

    let consumer = AMQPConsumer(endpoint: amqp)
    try await consumer.connect()
    try await consumer.declareTopicExchange(AMQPEventPublisher.exchange)
    try await consumer.declareQueue("", durable: false)
    try await consumer.bind(exchange: AMQPEventPublisher.exchange, routingKey: "device.*.telemetry")
    try await consumer.startConsuming()

    let publisher = try MQTTClient(endpoint: mqtt)
    try publisher.start()
    guard await publisher.waitUntilReady(timeout: .seconds(10)) else { throw Failure(description: "MQTT publisher not ready") }

    let total = Int(rate * seconds)
    // Latency, whole and in two legs split at the server's receipt (the event's `time`, in ms):
    // probe → Mosquitto → Triad, and Triad → RabbitMQ → the integrator.
    let reader = Task { () -> (Set<Int>, Int, [Double], [Double], [Double]) in
        var seen = Set<Int>()
        var duplicates = 0
        var latencies: [Double] = []
        var toServer: [Double] = []
        var fromServer: [Double] = []
        latencies.reserveCapacity(total)
        // Taken in batches (one hop to the consumer's thread for what has arrived) and acked 64
        // at a time (`multiple`), as a consumer at these rates would: a hop and an ack frame per
        // delivery would cost more than the delivery itself.
        var unacked = 0
        while true {
            let batch = try await consumer.next(upTo: 256, timeout: .seconds(drain), autoAck: false)
            guard let last = batch.last else { break }
            unacked += batch.count
            if unacked >= 64 {
                try await consumer.ack(last, multiple: true)
                unacked = 0
            }
            let now = nowMs()
            for d in batch where d.routingKey.hasPrefix("device.\(prefix)-") {
                // A server with `--telemetry-events batch` sends arrays of events.
                let body = try JSONCoding.parse(Data(d.body))
                let events: [JSONValue]
                if case .array(let array) = body { events = array } else { events = [body] }
                for event in events {
                    guard case .number(let seq)? = event["data"]?["values"]?["seq"], case .number(let sentAt)? = event["data"]?["values"]?["sentAt"] else {
                        continue
                    }
                    if !seen.insert(Int(seq)).inserted {
                        duplicates += 1
                        continue
                    }
                    latencies.append(now - sentAt)
                    if case .string(let time)? = event["time"], let received = Timestamp.parse(time) {
                        let receivedMs = received.timeIntervalSince1970 * 1000
                        toServer.append(receivedMs - sentAt)
                        fromServer.append(now - receivedMs)
                    }
                }
            }
            if seen.count == total { break }
        }
        return (seen, duplicates, latencies, toServer, fromServer)
    }
    // Paced in 10 ms slices; QoS 1, so libmosquitto resends what the broker did not ack.
    let start = nowMs()
    var seq = 0
    while seq < total {
        let due = min(total, Int((nowMs() - start) / 1000 * rate) + 1)
        while seq < due {
            let payload = #"{"values":{"seq":\#(seq),"sentAt":\#(nowMs()),"temperature":21.5}}"#
            try publisher.publish(topic: Telemetry.topic("\(prefix)-\(seq % devices)", .telemetry), payload: Array(payload.utf8))
            seq += 1
        }
        try await Task.sleep(for: .milliseconds(10))
    }
    let publishSeconds = (nowMs() - start) / 1000
    let (seen, duplicates, latencies, toServer, fromServer) = try await reader.value
    publisher.stop()
    consumer.close()
    let sorted = latencies.sorted()
    emit([
        "case": .string("pipeline"), "rate": .number(rate), "seconds": .number(seconds), "sent": .number(Double(total)),
        "received": .number(Double(seen.count)), "lost": .number(Double(total - seen.count)), "duplicates": .number(Double(duplicates)),
        "achievedPerSecond": .number((Double(total) / publishSeconds).rounded()),
        "p50ms": .number((percentile(sorted, 0.5) * 100).rounded() / 100), "p99ms": .number((percentile(sorted, 0.99) * 100).rounded() / 100),
        "toServerP99ms": .number((percentile(toServer.sorted(), 0.99) * 100).rounded() / 100),
        "fromServerP99ms": .number((percentile(fromServer.sorted(), 0.99) * 100).rounded() / 100),
        "cpuSeconds": .number((cpuSeconds() * 1000).rounded() / 1000),
    ])
}

func propagation() async throws {
    let token = try argument("token")
    let writer = TriadClient(server: try argument("write"), token: token)
    let reader = TriadClient(server: try argument("read"), token: token)
    let count = Int(try argument("count", "300"))!
    let name = "propagation-\(UUID().uuidString.prefix(8).lowercased())"
    var delays: [Double] = []
    for i in 0..<count {
        let body = Data(
            #"{"apiVersion":"triad.io/v1alpha1","kind":"Resource","metadata":{"name":"\#(name)","labels":{"seq":"\#(i)"}},"spec":{"kind":"Device"}}"#.utf8)
        let written = try await writer.call(.PUT, "/api/v1/resources/\(name)", body: body)
        guard written.status / 100 == 2, let version = written.json?["metadata"]?["resourceVersion"]?.stringValue.flatMap(Int64.init) else {
            throw Failure(description: "PUT answered \(written.status)")
        }
        let start = nowMs()
        while true {
            let read = try await reader.call(.GET, "/api/v1/resources/\(name)")
            if let seen = read.json?["metadata"]?["resourceVersion"]?.stringValue.flatMap(Int64.init), seen >= version { break }
            guard nowMs() - start < 10_000 else { throw Failure(description: "revision \(version) not readable on the other replica after 10 s") }
        }
        delays.append(nowMs() - start)
    }
    let sorted = delays.sorted()
    let p50 = (percentile(sorted, 0.5) * 100).rounded() / 100
    let p99 = (percentile(sorted, 0.99) * 100).rounded() / 100
    let max = ((sorted.last ?? 0) * 100).rounded() / 100
    emit(["case": .string("propagation"), "writes": .number(Double(count)), "p50ms": .number(p50), "p99ms": .number(p99), "maxms": .number(max)])
}

do {
    switch CommandLine.arguments.dropFirst().first {
    case "propagation": try await propagation()
    case "mqtt-ceiling": try await mqttCeiling()
    case "amqp-ceiling": try await amqpCeiling()
    case "pipeline": try await pipeline()
    default:
        FileHandle.standardError.write(Data("usage: triad-bench mqtt-ceiling|amqp-ceiling|pipeline|propagation …\n".utf8))
        exit(2)
    }
} catch {
    FileHandle.standardError.write(Data("triad-bench: \(error)\n".utf8))
    exit(1)
}
