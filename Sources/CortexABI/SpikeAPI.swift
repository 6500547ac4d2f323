import CCortex
import Cortex

// Seed 003's spike decoder through the C ABI.

/// A 1-D integer vector (any integer dtype, strides honoured) from a DLTensor.
func readIntegerVector(_ p: UnsafePointer<DLTensor>?, _ name: StaticString) throws -> [Int] {
    let t = try InputTensor(p, name: name, maskAllowed: true)
    guard let v = t.readIntegers() else {
        throw CortexError.dtypeMismatch("\(name): dtype \(t.kind.name) is not accepted (an integer dtype)")
    }
    guard t.shape.count == 1 else { throw CortexError.shapeMismatch("\(name): expected a 1-D tensor, got \(t.description)") }
    return v
}

@_cdecl("cx_decode")
public func cx_decode(_ model: OpaquePointer?, _ neuronIDs: UnsafePointer<DLTensor>?, _ timeBins: UnsafePointer<DLTensor>?,
                      _ values: UnsafePointer<DLTensor>?, _ offsets: UnsafePointer<DLTensor>?,
                      _ velocity: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_decode") {
        let m = try resolve(model, .model, "model", as: Model.self)
        let out = try requireOut(velocity, "velocity")
        guard let dec = m.spikeDecoder else {
            throw CortexError.unsupported("this is a '\(m.architecture)' model; cx_decode needs a spike_decoder model")
        }
        let y = try dec.decode(neurons: try readIntegerVector(neuronIDs, "neuron_ids"),
                               timeBins: try readIntegerVector(timeBins, "time_bins"),
                               values: try readIntegerVector(values, "values"),
                               offsets: try readIntegerVector(offsets, "offsets"))
        out.pointee = publishTensor(y)
    }
}
