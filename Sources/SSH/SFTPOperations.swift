import CLibSSH2
#if canImport(Glibc)
import Glibc
#endif

/// What `stat` tells about a remote path.
public struct FileAttributes: Sendable, Equatable {
    /// Size in bytes.
    public var size: UInt64
    /// Permission bits (e.g. 0o644), without the file type.
    public var permissions: UInt32
    /// True for a directory.
    public var isDirectory: Bool
    /// True for a regular file.
    public var isRegularFile: Bool
    /// Owner uid.
    public var uid: UInt32
    /// Group gid.
    public var gid: UInt32
    /// Modification time, seconds since the epoch.
    public var modified: UInt64
    /// For a symbolic link: the canonical path it resolves to (nil for a dangling link). The
    /// other fields then describe that file (nothing else is known of a dangling link).
    public var symlinkTarget: String? = nil
    /// True when the path itself is a symbolic link.
    public var isSymlink = false
}

/// Base for SFTP requests: starts the SFTP subsystem on first use and runs requests one at a
/// time per session, because libssh2 keeps per-SFTP state for a request in flight.
class SFTPOperation<Output: Sendable>: LoopOperation {
    let loopState: LoopState
    let path: String
    private var continuation: CheckedContinuation<Output, any Error>?
    private var queued = false

    init(loopState: LoopState, session: SessionState, path: String, continuation: CheckedContinuation<Output, any Error>) {
        self.loopState = loopState
        self.path = path
        self.continuation = continuation
        super.init(session: session)
    }

    override final func advance(now: ContinuousClock.Instant) -> Advance {
        guard let raw = session.raw else {
            fail(session.failure ?? SSHError(.closed, "the connection to \(session.label) is closed"))
            return .finished
        }
        let me = ObjectIdentifier(self)
        if !queued {
            session.sftpQueue.append(me)
            queued = true
        }
        guard session.sftpQueue.first == me else { return .blocked([]) }
        if session.sftp == nil {
            guard session.acquireOpenLock(self) else { return .blocked([]) }
            guard let sftp = libssh2_sftp_init(raw) else {
                if wouldBlock(raw) { return .blocked([.session(session)]) }
                session.releaseOpenLock(self)
                complete(.failure(.libssh2(.sftp, "cannot start SFTP on \(session.label) (is the sftp subsystem enabled in sshd_config?)", session: raw)))
                return .finished
            }
            session.releaseOpenLock(self)
            session.sftp = sftp
        }
        switch step(raw: raw, sftp: session.sftp!) {
        case .none:
            return .blocked([.session(session)])
        case .some(let result):
            complete(result)
            return .finished
        }
    }

    /// Advances the request; nil while it would block.
    func step(raw: OpaquePointer, sftp: OpaquePointer) -> Result<Output, SSHError>? { nil }

    /// The SFTP status code of the last failed request.
    func sftpStatus(_ sftp: OpaquePointer) -> UInt {
        UInt(libssh2_sftp_last_error(sftp))
    }

    /// What opening `path` for reading gave.
    enum Opening {
        case opened(OpaquePointer)
        case wouldBlock
        case absent
        case failed(SSHError)
    }

    /// Opens `path` for reading (a step of a non-blocking request: `.wouldBlock` means call again).
    func openForReading(raw: OpaquePointer, sftp: OpaquePointer) -> Opening {
        if let handle = rb_sftp_open(sftp, path, UInt32(path.utf8.count), RB_FXF_READ, 0) { return .opened(handle) }
        if wouldBlock(raw) { return .wouldBlock }
        if sftpStatus(sftp) == RB_FX_NO_SUCH_FILE { return .absent }
        return .failed(sftpError("cannot open", raw: raw, sftp: sftp))
    }

    /// An error for a failed SFTP request, naming the path and the server's status.
    func sftpError(_ what: String, raw: OpaquePointer, sftp: OpaquePointer) -> SSHError {
        let (code, text) = lastError(raw)
        let status = sftpStatus(sftp)
        let reason: String
        switch status {
        case 2: reason = "no such file"
        case 3: reason = "permission denied"
        case 4: reason = "failure"
        case 11: reason = "file already exists"
        default: reason = "SFTP status \(status)"
        }
        return SSHError(.sftp, "\(what) \(path) on \(session.label): \(reason)", code: code, detail: text)
    }

    private func complete(_ result: Result<Output, SSHError>) {
        if let index = session.sftpQueue.firstIndex(of: ObjectIdentifier(self)) {
            session.sftpQueue.remove(at: index)
        }
        session.releaseOpenLock(self)
        guard let continuation else { return }
        self.continuation = nil
        continuation.resume(with: result.mapError { $0 as any Error })
    }

    override func fail(_ error: SSHError) {
        complete(.failure(error))
    }
}

/// Reads a whole remote file; nil when it does not exist.
final class ReadFileOperation: SFTPOperation<[UInt8]?> {
    private var handle: OpaquePointer?
    private var contents: [UInt8] = []
    private var reachedEnd = false
    /// How much one read asks for. libssh2 keeps four times a read's size requested ahead, so
    /// the first reads ask for little: a small file (a lock, a config) is then one request,
    /// not the nine a 64 KiB read sends. A read that fills it switches to the whole buffer.
    private var readSize = 4096

    override func step(raw: OpaquePointer, sftp: OpaquePointer) -> Result<[UInt8]?, SSHError>? {
        if handle == nil {
            switch openForReading(raw: raw, sftp: sftp) {
            case .opened(let h): handle = h
            case .wouldBlock: return nil
            case .absent: return .success(nil)
            case .failed(let error): return .failure(error)
            }
        }
        while !reachedEnd {
            let size = min(readSize, loopState.readBuffer.count)
            let n = loopState.readBuffer.withUnsafeMutableBufferPointer { buf in
                buf.withMemoryRebound(to: CChar.self) { libssh2_sftp_read(handle, $0.baseAddress, size) }
            }
            if n > 0 {
                contents += loopState.readBuffer[0..<Int(n)]
                if n == size { readSize = loopState.readBuffer.count }
            } else if n == 0 {
                reachedEnd = true
            } else if Int32(n) == RB_ERROR_EAGAIN {
                return nil
            } else {
                return .failure(sftpError("cannot read", raw: raw, sftp: sftp))
            }
        }
        if call(rb_sftp_close(handle)).isAgain { return nil }
        handle = nil
        return .success(contents)
    }
}

/// Reads a remote file in chunks and hands each to `sink` as it arrives, in order: nothing
/// beyond one read buffer (64 KiB) is held, whatever the file's size. nil when the file does
/// not exist; else the bytes read. `sink` returning false stops the copy: the handle is
/// closed and the request fails.
final class StreamReadOperation: SFTPOperation<UInt64?> {
    private let sink: @Sendable (UnsafeRawBufferPointer) -> Bool
    private var handle: OpaquePointer?
    private var total: UInt64 = 0
    private var reachedEnd = false
    private var stopped: SSHError?

    init(loopState: LoopState, session: SessionState, path: String, sink: @escaping @Sendable (UnsafeRawBufferPointer) -> Bool,
         continuation: CheckedContinuation<UInt64?, any Error>) {
        self.sink = sink
        super.init(loopState: loopState, session: session, path: path, continuation: continuation)
    }

    override func step(raw: OpaquePointer, sftp: OpaquePointer) -> Result<UInt64?, SSHError>? {
        if handle == nil {
            switch openForReading(raw: raw, sftp: sftp) {
            case .opened(let h): handle = h
            case .wouldBlock: return nil
            case .absent: return .success(nil)
            case .failed(let error): return .failure(error)
            }
        }
        while !reachedEnd && stopped == nil {
            let size = loopState.readBuffer.count
            let n = loopState.readBuffer.withUnsafeMutableBufferPointer { buf in
                buf.withMemoryRebound(to: CChar.self) { libssh2_sftp_read(handle, $0.baseAddress, size) }
            }
            if n > 0 {
                total += UInt64(n)
                let taken = loopState.readBuffer.withUnsafeBytes { sink(UnsafeRawBufferPointer(rebasing: $0[0..<Int(n)])) }
                if !taken { stopped = SSHError(.sftp, "copying \(path) from \(session.label) was stopped by its receiver") }
            } else if n == 0 {
                reachedEnd = true
            } else if Int32(n) == RB_ERROR_EAGAIN {
                return nil
            } else {
                stopped = sftpError("cannot read", raw: raw, sftp: sftp)
            }
        }
        if call(rb_sftp_close(handle)).isAgain { return nil }
        handle = nil
        if let stopped { return .failure(stopped) }
        return .success(total)
    }
}

/// Stats a remote path; nil when it does not exist. A symbolic link is followed and says so:
/// `isSymlink`, and `symlinkTarget`, the canonical path of the file it resolves to. A path
/// that is not a link costs one request, as a plain stat would.
final class StatOperation: SFTPOperation<FileAttributes?> {
    private var link: FileAttributes?
    private var target: String?

    /// One stat request: nil while it would block, `.success(nil)` when nothing is there.
    private enum Stat {
        case again
        case found(LIBSSH2_SFTP_ATTRIBUTES)
        case done(Result<FileAttributes?, SSHError>)
    }

    private func stat(_ which: String, follow: Bool, missing: FileAttributes?, raw: OpaquePointer, sftp: OpaquePointer) -> Stat {
        var attrs = LIBSSH2_SFTP_ATTRIBUTES()
        let length = UInt32(which.utf8.count)
        switch call(follow ? rb_sftp_stat(sftp, which, length, &attrs) : rb_sftp_lstat(sftp, which, length, &attrs)) {
        case .again: return .again
        case .failed:
            if sftpStatus(sftp) == RB_FX_NO_SUCH_FILE { return .done(.success(missing)) }
            return .done(.failure(sftpError("cannot stat", raw: raw, sftp: sftp)))
        case .ok: return .found(attrs)
        }
    }

    override func step(raw: OpaquePointer, sftp: OpaquePointer) -> Result<FileAttributes?, SSHError>? {
        if link == nil {
            switch stat(path, follow: false, missing: nil, raw: raw, sftp: sftp) {
            case .again: return nil
            case .done(let result): return result
            case .found(let attrs):
                let found = Self.attributes(attrs)
                guard UInt32(attrs.permissions) & 0o170000 == 0o120000 else { return .success(found) }
                var dangling = found
                dangling.isSymlink = true
                dangling.isRegularFile = false
                link = dangling
            }
        }
        if target == nil {
            var buffer = [CChar](repeating: 0, count: 4097)
            let n = rb_sftp_realpath(sftp, path, UInt32(path.utf8.count), &buffer, UInt32(buffer.count - 1))
            if n == RB_ERROR_EAGAIN { return nil }
            guard n > 0 else { return .success(link) }
            target = String(decoding: buffer[..<Int(n)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        switch stat(target!, follow: true, missing: link, raw: raw, sftp: sftp) {
        case .again: return nil
        case .done(let result): return result
        case .found(let attrs):
            var resolved = Self.attributes(attrs)
            resolved.isSymlink = true
            resolved.symlinkTarget = target
            return .success(resolved)
        }
    }

    private static func attributes(_ attrs: LIBSSH2_SFTP_ATTRIBUTES) -> FileAttributes {
        let type = UInt32(attrs.permissions) & 0o170000
        return FileAttributes(
            size: UInt64(attrs.filesize), permissions: UInt32(attrs.permissions) & 0o7777,
            isDirectory: type == 0o040000, isRegularFile: type == 0o100000,
            uid: UInt32(attrs.uid), gid: UInt32(attrs.gid), modified: UInt64(attrs.mtime))
    }
}

/// Writes a whole remote file with the given permissions (set explicitly, whatever the umask).
final class WriteFileOperation: SFTPOperation<Void> {
    private let data: [UInt8]
    private let mode: UInt32
    private let exclusive: Bool
    private var handle: OpaquePointer?
    private var offset = 0
    private var modeSet = false

    init(loopState: LoopState, session: SessionState, path: String, data: [UInt8], mode: UInt32, exclusive: Bool,
         continuation: CheckedContinuation<Void, any Error>) {
        self.data = data
        self.mode = mode
        self.exclusive = exclusive
        super.init(loopState: loopState, session: session, path: path, continuation: continuation)
    }

    override func step(raw: OpaquePointer, sftp: OpaquePointer) -> Result<Void, SSHError>? {
        if handle == nil {
            let flags = RB_FXF_WRITE | RB_FXF_CREAT | RB_FXF_TRUNC | (exclusive ? RB_FXF_EXCL : 0)
            guard let h = rb_sftp_open(sftp, path, UInt32(path.utf8.count), flags, Int(mode)) else {
                if wouldBlock(raw) { return nil }
                return .failure(sftpError("cannot create", raw: raw, sftp: sftp))
            }
            handle = h
        }
        if !modeSet {
            var attrs = LIBSSH2_SFTP_ATTRIBUTES()
            attrs.flags = RB_SFTP_ATTR_PERMISSIONS
            attrs.permissions = UInt(mode)
            switch call(libssh2_sftp_fstat_ex(handle, &attrs, 1)) {
            case .again: return nil
            case .failed: return .failure(sftpError("cannot set the mode of", raw: raw, sftp: sftp))
            case .ok: modeSet = true
            }
        }
        while offset < data.count {
            let n = data.withUnsafeBufferPointer { buf in
                buf.withMemoryRebound(to: CChar.self) { libssh2_sftp_write(handle, $0.baseAddress! + offset, $0.count - offset) }
            }
            if n > 0 {
                offset += Int(n)
            } else if Int32(n) == RB_ERROR_EAGAIN {
                return nil
            } else {
                return .failure(sftpError("cannot write", raw: raw, sftp: sftp))
            }
        }
        switch call(rb_sftp_close(handle)) {
        case .again: return nil
        case .failed: return .failure(sftpError("cannot finish writing", raw: raw, sftp: sftp))
        case .ok:
            handle = nil
            return .success(())
        }
    }
}

/// Removes a remote file; succeeds when it is already gone.
final class UnlinkOperation: SFTPOperation<Void> {
    override func step(raw: OpaquePointer, sftp: OpaquePointer) -> Result<Void, SSHError>? {
        switch call(rb_sftp_unlink(sftp, path, UInt32(path.utf8.count))) {
        case .again: return nil
        case .failed:
            if sftpStatus(sftp) == RB_FX_NO_SUCH_FILE { return .success(()) }
            return .failure(sftpError("cannot remove", raw: raw, sftp: sftp))
        case .ok: return .success(())
        }
    }
}
