// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "cortex",
    products: [
        // libcortex.so: the C ABI declared in include/cortex.h.
        .library(name: "cortex", type: .dynamic, targets: ["CortexABI"]),
        // The pure-Swift API for Swift apps.
        .library(name: "Cortex", targets: ["Cortex"]),
        // The serving engine (batching, sessions, metrics) for Swift servers.
        .library(name: "CortexServing", targets: ["CortexServing"]),
        // The HTTP server.
        .executable(name: "cortex-serve", targets: ["cortex-serve"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        // OpenBLAS, loaded with dlopen at first use (Debian: libopenblas0); see blas_loader.c.
        .target(name: "CKernels", path: "Sources/CKernels"),
        // The system SQLite (libsqlite3), for the persistent session store.
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite"),
        // The public header (symlinked from include/) and the thread-local error buffer.
        .target(name: "CCortex", path: "Sources/CCortex"),
        // Tensors, kernels, file formats and models, in pure Swift.
        .target(
            name: "Cortex",
            dependencies: ["CKernels", "CSQLite"],
            path: "Sources/Cortex"
        ),
        // Batching, sessions, metrics and routing behind cortex-serve; not in libcortex.so.
        .target(name: "CortexServing", dependencies: ["Cortex"], path: "Sources/CortexServing"),
        // Only the @_cdecl exports of cortex.h.
        .target(name: "CortexABI", dependencies: ["Cortex", "CCortex"], path: "Sources/CortexABI"),
        // cortex-serve: HTTP/1.1 (SwiftNIO) in front of Cortex's ServingEngine.
        .executableTarget(
            name: "cortex-serve",
            dependencies: ["Cortex", "CortexServing", .product(name: "NIOCore", package: "swift-nio"),
                           .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio")],
            path: "Sources/cortex-serve",
            swiftSettings: [.swiftLanguageMode(.v5)]
        ),
        .testTarget(
            name: "CortexTests",
            dependencies: ["Cortex", "CortexServing", "CortexABI", "CCortex"],
            path: "Tests/CortexTests"
        ),
    ]
)
