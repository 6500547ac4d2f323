import Cortex
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Every memory-stack golden, by folder name: each directory of Tests/goldens with a
/// manifest.json and a cortex_stack model (as CMake and pytest find them), so a new
/// core's golden is tested without listing it anywhere.
let stackGoldenNames: [String] = {
    let root = repoRoot + "/Tests/goldens"
    guard let dir = opendir(root) else { return [] }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        guard !name.hasPrefix("."), (try? FileIO.read(root + "/" + name + "/manifest.json")) != nil,
              let config = try? JSON.parse(try FileIO.read(root + "/" + name + "/model/config.json")),
              config["architecture"]?.string == "cortex_stack" else { continue }
        names.append(name)
    }
    return names.sorted()
}()

/// Repository root, from this file's path (Tests/CortexTests/GoldenSupport.swift).
let repoRoot: String = {
    var parts = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)
    return parts.joined(separator: "/")
}()

/// One golden folder: Tests/goldens/<name>/{model/, cases.safetensors, manifest.json}.
struct Golden {
    let name: String
    let dir: String
    let model: Model
    let cases: SafetensorsFile
    /// Route ids the reference ran with, by batch size (models with routed adapters).
    let routeIDs: [String: [Int]]

    init(_ name: String) throws {
        self.name = name
        dir = repoRoot + "/Tests/goldens/" + name
        model = try Model.load(directory: dir + "/model")
        cases = try SafetensorsFile(path: dir + "/cases.safetensors")
        let manifest = try JSON.parse(try FileIO.read(dir + "/manifest.json"))
        var ids: [String: [Int]] = [:]
        for (k, v) in manifest["route_ids"]?.objectPairs ?? [] { ids[k] = (v.array ?? []).compactMap(\.int) }
        routeIDs = ids
    }

    /// A fresh state, bound to the golden's route ids for its batch size.
    func makeState(batch: Int) throws -> RecurrentState {
        try bind(try model.makeState(batch: batch))
    }

    /// `s` bound to the golden's route ids for its batch size (unchanged without them).
    func bind(_ s: RecurrentState) throws -> RecurrentState {
        if let ids = routeIDs[String(s.batch)] { try s.setRouteIDs(ids) }
        return s
    }

    func tensor(_ name: String) throws -> Tensor { try cases.tensor(name) }

    /// State tensors stored under "<case>/<prefix>".
    func stateTensors(_ prefix: String) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for n in cases.names where n.hasPrefix(prefix) {
            out[String(n.dropFirst(prefix.count))] = try? cases.tensor(n)
        }
        return out
    }
}

/// Max |a - b|, and the tolerance 1e-5 · max(1, max |reference|).
func maxError(_ got: Tensor, _ want: Tensor) -> (err: Float, tol: Float) {
    let a = got.toArray(), b = want.toArray()
    var err: Float = a.count == b.count ? 0 : .infinity
    var scale: Float = 1
    for (x, y) in zip(a, b) {
        err = max(err, abs(x - y))
        scale = max(scale, abs(y))
    }
    return (err, 1e-5 * scale)
}

/// Every golden comparison is recorded: its line goes to the log as `[golden-detail]`,
/// and at the end of the run one `[golden]` line per group (the text before the first
/// ":" of its label: a golden folder, "mythos gqa", ...) gives the count, the largest
/// error against a tolerance and how close to its tolerance the worst one came.
final class GoldenSummary: NSObject, XCTestObservation, @unchecked Sendable {
    static let shared: GoldenSummary = {
        let s = GoldenSummary()
        XCTestObservationCenter.shared.addTestObserver(s)
        return s
    }()
    private let groups = Locked<[String: (count: Int, err: Double, ratio: Double)]>([:])

    func record(_ label: String, err: Double, tol: Double) {
        print("[golden-detail] \(label): max abs error \(err)" + (tol > 0 ? " (tolerance \(tol))" : ""))
        let group = label.split(separator: ":", maxSplits: 1).first.map(String.init) ?? label
        groups.withLock { g in
            var v = g[group] ?? (0, 0, 0)
            v.count += 1
            // Differences recorded without a tolerance (a reference's own step/sequence
            // gap that Cortex reproduces) are details, not errors.
            if tol > 0 { v.err = max(v.err, err); v.ratio = max(v.ratio, err / tol) }
            g[group] = v
        }
    }

    func testBundleDidFinish(_ testBundle: Bundle) {
        for (name, v) in groups.withLock({ $0 }).sorted(by: { $0.key < $1.key }) {
            let worst = v.ratio > 0 ? String(format: ", worst at %.2f of its tolerance", v.ratio) : ""
            print("[golden] \(name): \(v.count) comparisons, max abs error \(String(format: "%.3g", v.err))\(worst)")
        }
    }
}

/// Record one comparison (see GoldenSummary); tol 0: a difference without a tolerance.
func goldenRecord(_ label: String, err: Float, tol: Float = 0) {
    GoldenSummary.shared.record(label, err: Double(err), tol: Double(tol))
}

func assertClose(_ got: Tensor, _ want: Tensor, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(got.shape, want.shape, "\(what): shape", file: file, line: line)
    let (err, tol) = maxError(got, want)
    goldenRecord(what, err: err, tol: tol)
    XCTAssertLessThanOrEqual(err, tol, "\(what): max abs error \(err) > \(tol)", file: file, line: line)
}

/// assertClose for raw output memory holding `want.count` floats (components tested
/// outside a model).
func assertClose(_ got: UnsafePointer<Float>, _ want: Tensor, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    let w = want.toArray()
    var err: Float = 0, scale: Float = 1
    for i in 0..<w.count { err = max(err, abs(got[i] - w[i])); scale = max(scale, abs(w[i])) }
    goldenRecord(what, err: err, tol: 1e-5 * scale)
    XCTAssertLessThanOrEqual(err, 1e-5 * scale, "\(what): max abs error \(err)", file: file, line: line)
}

/// Slice `[B, T, D]` at time t → `[B, D]`.
func timeSlice(_ x: Tensor, _ t: Int) throws -> Tensor {
    let B = x.shape[0], T = x.shape[1], D = x.shape[2]
    var v: [Float] = []
    let a = x.toArray()
    for b in 0..<B { v += a[(b * T + t) * D..<(b * T + t + 1) * D] }
    return try Tensor(shape: [B, D], values: v)
}

/// Stack `[B, D]` tensors along a new time axis → `[B, T, D]`.
func stackTime(_ xs: [Tensor]) throws -> Tensor {
    let B = xs[0].shape[0], D = xs[0].shape[1], T = xs.count
    var v = [Float](repeating: 0, count: B * T * D)
    for (t, x) in xs.enumerated() {
        let a = x.toArray()
        for b in 0..<B { for d in 0..<D { v[(b * T + t) * D + d] = a[b * D + d] } }
    }
    return try Tensor(shape: [B, T, D], values: v)
}
