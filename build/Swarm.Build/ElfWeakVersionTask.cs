// Makes one ELF symbol-version requirement weak so that glibc loads a library whose only use of
// that version is a link-time anchor. Used at build time by Directory.Build.targets (an inline
// MSBuild task) and compiled into the build-only Swarm.Build project for tests. See README "TorchSharp on Debian 12".
#nullable enable
using System;
using System.IO;
using System.Text;

namespace Swarm.Build
{
    /// <summary>Pure ELF64 logic: find a Vernaux entry by name and set VER_FLG_WEAK on it.</summary>
    public static class ElfWeakVersion
    {
        public const ushort VerFlagWeak = 0x2;
        private const uint ShtGnuVerneed = 0x6ffffffe;

        /// <summary>Result of <see cref="MakeWeak"/>.</summary>
        public enum Outcome { Patched, AlreadyWeak, NotRequired }

        /// <summary>True if the file's bytes name the given version (e.g. a libstdc++ that provides it).</summary>
        public static bool FileMentions(string path, string version)
        {
            byte[] data = File.ReadAllBytes(path);
            byte[] needle = Encoding.ASCII.GetBytes(version + "\0");
            for (int i = 0; i + needle.Length <= data.Length; i++)
            {
                int j = 0;
                while (j < needle.Length && data[i + j] == needle[j]) j++;
                if (j == needle.Length) return true;
            }
            return false;
        }

        /// <summary>Finds the system libstdc++.so.6, or null.</summary>
        public static string? FindSystemLibStdCxx()
        {
            foreach (string p in new[] { "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6",
                                         "/usr/lib64/libstdc++.so.6", "/usr/lib/aarch64-linux-gnu/libstdc++.so.6", "/usr/lib/libstdc++.so.6" })
                if (File.Exists(p)) return p;
            return null;
        }

        /// <summary>Returns the vna_flags of the named version requirement, or null if the file has none.</summary>
        public static ushort? ReadFlags(string path, string version)
        {
            byte[] data = File.ReadAllBytes(path);
            int at = FindVernaux(data, version);
            return at < 0 ? null : BitConverter.ToUInt16(data, at + 4);
        }

        /// <summary>Sets VER_FLG_WEAK on the named version requirement, in place. Idempotent.</summary>
        public static Outcome MakeWeak(string path, string version)
        {
            byte[] data = File.ReadAllBytes(path);
            int at = FindVernaux(data, version);
            if (at < 0) return Outcome.NotRequired;
            ushort flags = BitConverter.ToUInt16(data, at + 4);
            if ((flags & VerFlagWeak) != 0) return Outcome.AlreadyWeak;
            flags |= VerFlagWeak;
            using (var fs = new FileStream(path, FileMode.Open, FileAccess.Write))
            {
                fs.Seek(at + 4, SeekOrigin.Begin);
                fs.Write(BitConverter.GetBytes(flags), 0, 2);
            }
            return Outcome.Patched;
        }

        /// <summary>Offset of the Vernaux entry naming <paramref name="version"/>, or -1.</summary>
        private static int FindVernaux(byte[] d, string version)
        {
            if (d.Length < 64 || d[0] != 0x7f || d[1] != (byte)'E' || d[2] != (byte)'L' || d[3] != (byte)'F')
                throw new InvalidDataException("not an ELF file");
            if (d[4] != 2 || d[5] != 1) throw new InvalidDataException("only little-endian ELF64 is supported");
            long shoff = BitConverter.ToInt64(d, 0x28);
            int shentsize = BitConverter.ToUInt16(d, 0x3A);
            int shnum = BitConverter.ToUInt16(d, 0x3C);
            for (int i = 0; i < shnum; i++)
            {
                int sh = checked((int)(shoff + (long)i * shentsize));
                if (BitConverter.ToUInt32(d, sh + 4) != ShtGnuVerneed) continue;
                int off = checked((int)BitConverter.ToInt64(d, sh + 0x18));
                int link = BitConverter.ToInt32(d, sh + 0x28);
                int count = BitConverter.ToInt32(d, sh + 0x2C);
                int strtab = checked((int)BitConverter.ToInt64(d, checked((int)(shoff + (long)link * shentsize)) + 0x18));
                int vn = off;
                for (int n = 0; n < count; n++)
                {
                    int cnt = BitConverter.ToUInt16(d, vn + 2);
                    int aux = vn + BitConverter.ToInt32(d, vn + 8);
                    for (int a = 0; a < cnt; a++)
                    {
                        int name = strtab + BitConverter.ToInt32(d, aux + 8);
                        int end = Array.IndexOf(d, (byte)0, name);
                        if (Encoding.ASCII.GetString(d, name, end - name) == version) return aux;
                        int next = BitConverter.ToInt32(d, aux + 12);
                        if (next == 0) break;
                        aux += next;
                    }
                    int vnext = BitConverter.ToInt32(d, vn + 12);
                    if (vnext == 0) break;
                    vn += vnext;
                }
            }
            return -1;
        }
    }

#if !SWARM_ELF_LOGIC_ONLY
    /// <summary>MSBuild task: patches the copied libLibTorchSharp.so when the system libstdc++ lacks the version.</summary>
    public sealed class ElfWeakVersionTask : Microsoft.Build.Utilities.Task
    {
        [Microsoft.Build.Framework.Required] public string Library { get; set; } = "";
        [Microsoft.Build.Framework.Required] public string Version { get; set; } = "";

        public override bool Execute()
        {
            if (!File.Exists(Library)) return true;
            string? std = ElfWeakVersion.FindSystemLibStdCxx();
            if (std != null && ElfWeakVersion.FileMentions(std, Version))
                return true; // the system provides it: nothing to do
            var outcome = ElfWeakVersion.MakeWeak(Library, Version);
            if (outcome == ElfWeakVersion.Outcome.Patched)
                Log.LogMessage(Microsoft.Build.Framework.MessageImportance.High,
                    $"swarm: marked {Version} weak in {Library} (system libstdc++ lacks it)");
            return true;
        }
    }
#endif
}
